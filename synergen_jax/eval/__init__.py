"""Benchmark scores: FID (InceptionV3 as pytorch-fid), VQA accuracy, captioning BLEU / CIDEr."""
