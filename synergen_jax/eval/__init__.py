"""Evaluation in one place: benchmark metrics, the class-dataset report, benchmark suites.

  inception.py  pytorch-fid's FID InceptionV3 in Flax, loaded from its pt_inception file
  fid.py        streaming Inception statistics, .npz stats, the Frechet distance, folders
  vqa.py        VQA accuracy (official normalisation), exact match, ANLS
  benchmarks.py each VQA benchmark's official answer rule (VQAv2, TextVQA, GQA, DocVQA, ChartQA)
  captions.py   BLEU / CIDEr-D (pycocoevalcap) with PTB tokenisation (Java or Python port)
  judge.py      the small CNN that judges generated images of a class dataset; diversity
  report.py     the evaluation report (understanding, generation, tokenizer) -> eval.json
  coco_protocol.py  the MSCOCO-30k FID protocol: the caption draw, the reference images and cache
  suites.py     evaluate --suite: a batch job + its scores -> eval.json
"""
