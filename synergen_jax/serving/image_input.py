"""image_url parts -> uint8 [H, W, 3] pixels, within the server's limits.

`data:` URLs (base64) are always accepted. http(s) URLs only when the server runs with
--allow_remote_images, and never to a loopback, private, link-local or otherwise non-public address:
a literal address is checked here, a host name by the resolver every connection uses (so a name
that resolves to 127.0.0.1 is refused too), and redirects are not followed (a redirect could point
anywhere). Other schemes (file:, ftp:, ...) are refused. Both the encoded size and the pixel count
are bounded before the pixels are decoded (a small PNG can declare a huge canvas).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import ipaddress
import socket
import urllib.parse

import aiohttp
import numpy as np
from aiohttp.abc import AbstractResolver
from PIL import Image as PILImage

from synergen_jax.core.errors import BadRecord
from synergen_jax.data import images as image_ops
from synergen_jax.serving.errors import bad


@dataclasses.dataclass(frozen=True)
class ImageLimits:
  max_bytes: int = 8 << 20          # encoded image
  max_pixels: int = 16 << 20        # width * height
  allow_remote: bool = False
  fetch_timeout_s: float = 10.0


def public_address(address: str) -> bool:
  """Whether `address` (IPv4 or IPv6 literal) is a public unicast address."""
  ip = ipaddress.ip_address(address.split("%")[0])
  if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
    ip = ip.ipv4_mapped
  return ip.is_global and not ip.is_multicast


class NonPublicAddress(OSError):
  """A host name that resolves to a non-public address."""


class PublicResolver(AbstractResolver):
  """Resolves like the system resolver, but refuses a name with any non-public address."""

  def __init__(self):
    self._inner = aiohttp.ThreadedResolver()

  async def resolve(self, host, port=0, family=socket.AF_INET):
    found = await self._inner.resolve(host, port, family)
    blocked = [x["host"] for x in found if not public_address(x["host"])]
    if blocked:
      raise NonPublicAddress(f"{host} resolves to the non-public address {blocked[0]}")
    return found

  async def close(self):
    await self._inner.close()


async def pixels_of(url: str, limits: ImageLimits, where: str) -> np.ndarray:
  if url.startswith("data:"):
    data = _data_url(url, limits, where)
  elif urllib.parse.urlsplit(url).scheme in ("http", "https"):
    data = await _fetch(url, limits, where)
  else:
    raise bad(f"{where}: only data: URLs (and http(s) URLs when the server allows remote images) are "
              f"accepted, got {url[:60]!r}", where)
  return decode(data, limits, where)


def _data_url(url: str, limits: ImageLimits, where: str) -> bytes:
  header, comma, payload = url.partition(",")
  if not comma or not header.endswith(";base64"):
    raise bad(f"{where}: a data: URL must be data:<type>;base64,<data>", where)
  if len(payload) > limits.max_bytes * 4 // 3 + 4:
    raise bad(f"{where}: the image is over the limit of {limits.max_bytes} bytes", where,
              "image_too_large")
  try:
    return base64.b64decode(payload, validate=True)
  except (binascii.Error, ValueError) as e:
    raise bad(f"{where}: the data: URL is not valid base64 ({e})", where) from e


async def _fetch(url: str, limits: ImageLimits, where: str) -> bytes:
  if not limits.allow_remote:
    raise bad(f"{where}: remote image URLs are off on this server (it runs without "
              "--allow_remote_images); send the image as a data: URL", where)
  host = urllib.parse.urlsplit(url).hostname or ""
  try:
    literal = not public_address(host)
  except ValueError:
    literal = False                                  # a name: the resolver checks its addresses
  if literal:
    raise bad(f"{where}: {host} is not a public address", where)
  timeout = aiohttp.ClientTimeout(total=limits.fetch_timeout_s)
  try:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicResolver()),
                                     timeout=timeout) as session:
      async with session.get(url, allow_redirects=False) as response:
        if response.status != 200:
          raise bad(f"{where}: fetching the image gave HTTP {response.status}", where)
        data = await response.content.read(limits.max_bytes + 1)
  except (aiohttp.ClientError, OSError, TimeoutError) as e:
    blocked = _cause(e, NonPublicAddress)      # aiohttp wraps the resolver's refusal
    raise bad(f"{where}: {blocked or f'cannot fetch the image: {e}'}", where) from e
  if len(data) > limits.max_bytes:
    raise bad(f"{where}: the image is over the limit of {limits.max_bytes} bytes", where,
              "image_too_large")
  return data


def _cause(error: BaseException, kind: type) -> BaseException | None:
  seen = 0
  while error is not None and seen < 10:
    if isinstance(error, kind):
      return error
    error = getattr(error, "os_error", None) or error.__cause__ or error.__context__
    seen += 1
  return None


def decode(data: bytes, limits: ImageLimits, where: str) -> np.ndarray:
  if len(data) > limits.max_bytes:
    raise bad(f"{where}: the image is over the limit of {limits.max_bytes} bytes", where,
              "image_too_large")
  try:
    width, height = PILImage.open(io.BytesIO(data)).size     # the header only
  except Exception as e:  # noqa: BLE001 - PIL raises many kinds for bad input
    raise bad(f"{where}: the image does not decode ({type(e).__name__}: {e})", where,
              "invalid_image") from e
  if width * height > limits.max_pixels:
    raise bad(f"{where}: the image is {width}x{height} pixels, over the limit of {limits.max_pixels}",
              where, "image_too_large")
  try:
    return image_ops.decode(data)
  except BadRecord as e:
    raise bad(f"{where}: {e}", where, "invalid_image") from e
