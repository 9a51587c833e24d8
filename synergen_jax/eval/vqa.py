"""VQA scores of predicted answers against human answers: VQA accuracy, exact match and ANLS.

VQA accuracy follows the official evaluation line by line (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py), so numbers compare with published VQAv2 / VizWiz
/ TextVQA results, including its quirks:
  - answers and the prediction are normalised only when the human answers differ from each other
    (raw answers ["2"] * 10 do not match the prediction "two");
  - the period regex "(?!<=\\d)(\\.)(?!\\d)" is a lookahead, not a lookbehind: it drops every "."
    that is not followed by a digit ("dog." -> "dog", "3.5" and ".5" stay), and only the first 32
    (vqaEval.py passes re.UNICODE, 32, as `count`);
  - contractions are looked up after lowercasing, so the map's capitalised keys ("Im") never match.
The accuracy of one prediction is the mean, over the n leave-one-out subsets of the n human
answers, of min(1, matches in the subset / 3): 0.3, 0.6, 0.9 and 1.0 when 1, 2, 3 and >= 4 of 10
humans gave it. That formula is only defined for 10 answers (leave-one-out over fewer caps the score
at (n - 1) / 3: 0 for GQA-style single answers), so a record with n < 10 answers scores
min(1, matches / min(3, n)) with the normalisation always applied: 1 for a match of a single
answer, 1/3 per matching answer of three or more.

exact_match: the normalised prediction equals one of the normalised answers (always normalised).
anls: as DocVQA / ST-VQA's evaluation: max over answers of 1 - levenshtein / length on lowercased,
whitespace-collapsed strings, and 0 below the 0.5 threshold (a score of exactly 0.5 stays).
"""

from __future__ import annotations

import re
from typing import Sequence

from synergen_jax.core.errors import DataError
from synergen_jax.data import jsonl

# vqaEval.py's maps, entry for entry (its "somebody'd" -> "somebodyd" included).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've"}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
ANLS_THRESHOLD = 0.5


def _clean_whitespace(text: str) -> str:
  return text.replace("\n", " ").replace("\t", " ").strip()


def _strip_punctuation(text: str) -> str:
  """vqaEval.processPunctuation: a mark next to a space (or any mark, when the text has a digit
  group comma like "1,000") is deleted, otherwise it becomes a space; then the periods go."""
  out = text
  delete_all = _COMMA_STRIP.search(text) is not None
  for mark in PUNCTUATION:
    if delete_all or mark + " " in text or " " + mark in text:
      out = out.replace(mark, "")
    else:
      out = out.replace(mark, " ")
  return _PERIOD_STRIP.sub("", out, count=re.UNICODE)


def _digits_articles_contractions(text: str) -> str:
  """vqaEval.processDigitArticle: lowercase, number words to digits, no articles, contractions."""
  words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
  return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalise_answer(text: str) -> str:
  """The official normalisation of one answer: "Two dogs." -> "2 dogs", "isnt" -> "isn't"."""
  return _digits_articles_contractions(_strip_punctuation(_clean_whitespace(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """vqaEval.evaluate for one question (see the module docstring for fewer than 10 answers)."""
  if len(answers) < 10:
    matches = sum(normalise_answer(a) == normalise_answer(prediction) for a in answers)
    return min(1.0, matches / min(3, len(answers)))
  answers = [_clean_whitespace(a) for a in answers]
  prediction = _clean_whitespace(prediction)
  if len(set(answers)) > 1:
    answers = [normalise_answer(a) for a in answers]
    prediction = normalise_answer(prediction)
  matches = [a == prediction for a in answers]
  total = sum(matches)
  return sum(min(1.0, (total - m) / 3) for m in matches) / len(matches)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
  return float(normalise_answer(prediction) in {normalise_answer(a) for a in answers})


def levenshtein(a: str, b: str) -> int:
  previous = list(range(len(b) + 1))
  for i, char_a in enumerate(a, 1):
    current = [i]
    for j, char_b in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
    previous = current
  return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
  """DocVQA's get_NLS: the distance is taken between the lowercased, whitespace-collapsed strings
  but divided by the longer raw string's length, as in the official script."""
  def collapse(text):
    return " ".join(text.strip().lower().split())
  distances = []
  for answer in answers:
    length = max(len(answer.upper()), len(prediction.upper()))
    distances.append(levenshtein(collapse(answer), collapse(prediction)) / length if length else 0.0)
  similarity = 1 - min(distances)
  return 0.0 if similarity < threshold else similarity


def check_pairs(pairs: Sequence[tuple[str, Sequence[str]]]) -> None:
  """(prediction, human answers) pairs to score: at least one, each a string and a non-empty list."""
  if not pairs:
    raise ValueError("no (prediction, answers) pairs to score")
  for prediction, answers in pairs:
    if not isinstance(prediction, str) or not answers:
      raise ValueError(f"need a string prediction and a non-empty answer list, got "
                       f"{prediction!r}, {answers!r}")


def scores(pairs: Sequence[tuple[str, Sequence[str]]]) -> dict:
  """Means over (prediction, human answers) pairs: accuracy (VQA), exact_match, anls, and count."""
  check_pairs(pairs)
  n = len(pairs)
  return dict(accuracy=sum(vqa_accuracy(p, a) for p, a in pairs) / n,
              exact_match=sum(exact_match(p, a) for p, a in pairs) / n,
              anls=sum(anls(p, a) for p, a in pairs) / n, count=n)


def read_vqa_records(path: str, answers_per_record: int | None = None) -> list[dict]:
  """{"image", "question", "answers"} records of a jsonl file; errors name the file, line and field.
  answers_per_record: the number of human answers every record must have (10 for VQAv2 and
  TextVQA, whose official accuracy is defined over 10)."""
  records = []
  for where, _, record in jsonl.records(path, required=("image", "question", "answers")):
    for field in ("image", "question"):
      if not isinstance(record[field], str) or not record[field].strip():
        raise DataError(f"{where}: \"{field}\" must be a non-empty string, got {record[field]!r}")
    answers = record["answers"]
    if (not isinstance(answers, list) or not answers
        or not all(isinstance(a, str) for a in answers)):
      raise DataError(f"{where}: \"answers\" must be a non-empty list of strings, got {answers!r}")
    if answers_per_record is not None and len(answers) != answers_per_record:
      raise DataError(f"{where}: {len(answers)} \"answers\"; this benchmark's accuracy needs "
                      f"{answers_per_record} human answers per question")
    records.append(record)
  return records
