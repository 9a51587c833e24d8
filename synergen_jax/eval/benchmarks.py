"""Each VQA benchmark's official answer rule, chosen by `evaluate --suite vqa --benchmark NAME`.

  vqav2    VQA accuracy of the official evaluation (GT-Vision-Lab/VQA vqaEval.py, eval/vqa.py):
           the 10 human answers and the prediction are normalised (punctuation, number words,
           articles, contractions) only when the humans disagree; the mean over the 10 leave-one-out
           subsets of 9 answers of min(1, matches / 3).
           https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/vqaEvaluation/vqaEval.py
  textvqa  TextVQA's official accuracy (MMF/pythia TextVQAAccuracyEvaluator, as in LLaVA's
           m4c_evaluator.py): the same leave-one-out formula over 10 answers, but every answer and
           the prediction always go through EvalAI's answer processor (vqaEval's normalisation
           after lowercasing, deleting "," and "?" and splitting "'s" off the word).
           https://github.com/facebookresearch/mmf/blob/main/mmf/utils/m4c_evaluators.py
  gqa      exact match after lowercasing and deleting ASCII punctuation (string.punctuation), as
           lmms-eval's gqa task (metric exact_match, ignore_case, ignore_punctuation); GQA's own
           eval.py compares the strings as given, its answers being lowercase words already.
           https://github.com/EvolvingLMMs-Lab/lmms-eval/blob/main/lmms_eval/tasks/gqa/gqa.yaml
  docvqa   ANLS (DocVQA / ST-VQA's evaluation, eval/vqa.py): max over answers of 1 - normalised
           Levenshtein distance, 0 below 0.5. https://rrc.cvc.uab.es/?ch=17&com=downloads
  chartqa  relaxed accuracy (pix2struct's relaxed_correctness, lmms-eval's chartqa): numbers (a
           trailing "%" divides by 100) within 5% of a non-zero target are right; anything else,
           a target of 0 included, must match case-insensitively. Best over the answers.
           https://github.com/google-research/pix2struct/blob/main/pix2struct/metrics.py

Before any rule the model's answer loses its surrounding whitespace (a decoded answer may start
with the tokenizer's space; the reference harnesses score stripped model outputs). vqav2 and
textvqa need exactly 10 human answers per record (the official scripts assume them); a record with
another count is refused by line before any decoding.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Callable, Sequence

from synergen_jax.eval import vqa

# pix2struct / lmms-eval's tolerance: "within 5% of the gold answer".
RELAXED_TOLERANCE = 0.05


def evalai_normalise(text: str) -> str:
  """pythia's EvalAIAnswerProcessor: its word_tokenize step, then vqaEval's normalisation (the
  comma regex of the latter never fires once the commas are gone)."""
  text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
  return vqa.normalise_answer(text)


def _leave_one_out(prediction: str, answers: Sequence[str]) -> float:
  total = sum(a == prediction for a in answers)
  return sum(min(1.0, (total - (a == prediction)) / 3) for a in answers) / len(answers)


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """TextVQAAccuracyEvaluator for one question: the score of the prediction's processed form among
  the processed human answers (0 when none gave it)."""
  return _leave_one_out(evalai_normalise(prediction), [evalai_normalise(a) for a in answers])


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def gqa_normalise(text: str) -> str:
  return text.lower().translate(_NO_PUNCTUATION)


def gqa_exact_match(prediction: str, answers: Sequence[str]) -> float:
  return float(gqa_normalise(prediction) in {gqa_normalise(a) for a in answers})


def _to_float(text: str) -> float | None:
  """pix2struct's _to_float: "12%" -> 0.12, Python's float() syntax otherwise, None if not a number."""
  try:
    return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
  except ValueError:
    return None


def relaxed_correctness(target: str, prediction: str,
                        max_relative_change: float = RELAXED_TOLERANCE) -> bool:
  """pix2struct's relaxed_correctness: |p - t| / |t| <= 5% when both are numbers and t != 0, else
  a case-insensitive exact match."""
  prediction_float, target_float = _to_float(prediction), _to_float(target)
  if prediction_float is not None and target_float:
    return abs(prediction_float - target_float) / abs(target_float) <= max_relative_change
  return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """Best over the targets, as pix2struct's aggregate_metrics (ChartQA has one)."""
  return float(any(relaxed_correctness(a, prediction) for a in answers))


@dataclasses.dataclass(frozen=True)
class Rule:
  metric: str                                          # the number's name in the report
  score: Callable[[str, Sequence[str]], float]         # (prediction, human answers) -> [0, 1]
  answers: int | None                                  # answers every record must have, or any
  text: str                                            # what the report says the rule is
  source: str                                          # the official implementation followed


BENCHMARKS = {
    "vqav2": Rule("vqa_accuracy", vqa.vqa_accuracy, 10,
                  "VQA accuracy: mean over the 10 leave-one-out subsets of min(1, matches / 3); "
                  "answers normalised (punctuation, number words, articles, contractions) when the "
                  "10 humans disagree",
                  "https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/"
                  "vqaEvaluation/vqaEval.py"),
    "textvqa": Rule("vqa_accuracy", textvqa_accuracy, 10,
                    "TextVQA accuracy: mean over the 10 leave-one-out subsets of min(1, matches / "
                    "3), every answer through EvalAI's answer processor",
                    "https://github.com/facebookresearch/mmf/blob/main/mmf/utils/m4c_evaluators.py"),
    "gqa": Rule("exact_match", gqa_exact_match, None,
                "exact match after lowercasing and deleting ASCII punctuation",
                "https://github.com/EvolvingLMMs-Lab/lmms-eval/blob/main/lmms_eval/tasks/gqa/"
                "gqa.yaml"),
    "docvqa": Rule("anls", vqa.anls, None,
                   f"ANLS: max over answers of 1 - Levenshtein / longer length on lowercased, "
                   f"whitespace-collapsed strings, 0 below {vqa.ANLS_THRESHOLD}",
                   "https://rrc.cvc.uab.es/?ch=17&com=downloads"),
    "chartqa": Rule("relaxed_accuracy", relaxed_accuracy, None,
                    f"relaxed accuracy: numbers within {RELAXED_TOLERANCE:.0%} of a non-zero "
                    "target (a trailing % divides by 100), otherwise a case-insensitive exact match",
                    "https://github.com/google-research/pix2struct/blob/main/pix2struct/metrics.py"),
}


def scores(pairs: Sequence[tuple[str, Sequence[str]]], benchmark: str) -> dict:
  """The benchmark's mean score over (prediction, human answers) pairs, named and explained."""
  rule = BENCHMARKS[benchmark]
  vqa.check_pairs(pairs)
  for prediction, answers in pairs:
    if rule.answers is not None and len(answers) != rule.answers:
      raise ValueError(f"{benchmark} scores {rule.answers} human answers per question, got "
                       f"{len(answers)}: {answers!r}")
  score = sum(rule.score(p.strip(), a) for p, a in pairs) / len(pairs)
  return {"benchmark": benchmark, rule.metric: score, "score": score, "metric": rule.metric,
          "count": len(pairs), "rule": rule.text, "source": rule.source}
