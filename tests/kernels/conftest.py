"""The marker of the kernel tests that run Pallas' Mosaic GPU interpreter (kernel_cases.py)."""


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "mgpu_interpret: runs Pallas' Mosaic GPU interpreter; selected (-m mgpu_interpret) "
      "by the one-device child process of test_flash_mgpu.py, skipped in the main process")
