"""Captioning scores (eval/captions.py): the Python tokenizer gives what pycocoevalcap's Java
PTBTokenizer gives, token for token, and the scores equal pycocoevalcap's own pipeline; scores do not
depend on record order; bad records and mismatched ids are refused with the place named."""

import json
import random
import shutil

import pytest

from synergen_jax.core.errors import DataError
from synergen_jax.eval import captions

needs_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="java is not on PATH: pycocoevalcap's PTBTokenizer runs the Stanford CoreNLP 3.4.1 jar")

# What the 3.4.1 jar outputs (checked with it), so the Python tokenizer is tested without Java too.
JAR_OUTPUTS = [
    ("A man riding a wave on top of a surfboard.", "a man riding a wave on top of a surfboard"),
    ("Two dogs aren't playing; they're sleeping!", "two dogs are n't playing they 're sleeping"),
    ('She said "hello" to the man (who was tall).', "she said hello to the man -lrb- who was tall -rrb-"),
    ("A black-and-white photo of a 3 1/2 inch cat, 1,000 people.",
     "a black-and-white photo of a 3\xa01/2 inch cat 1,000 people"),
    ("The cost is $5.50 -- or 5% off... maybe??", "the cost is $ 5.50 or 5 % off maybe ??"),
    ("I cannot believe we're gonna win", "i can not believe we 're gon na win"),
    ("Mr. Smith went to Washington D.C. with U.S. troops.",
     "mr. smith went to washington d.c. with u.s. troops"),
    ("A sign that reads \u201cSTOP\u201d \u2014 in red", "a sign that reads stop in red"),
    ("the <unk> sat on a mat", "the <unk> sat on a mat"),
    ("It's 10:30am at St. Mark's", "it 's 10:30 am at st. mark 's"),
]

VARIED = [caption for caption, _ in JAR_OUTPUTS] + [
    "A man's hat -- a woman's - hat", "the dogs' toys and the dog's bone", "I'm sure it's the cat's",
    "don't Don't DON'T can't won't ain't shouldn't", "'tis the season, 'twas 'quoted' words",
    "y'all c'mon o'clock ma'am O'Neil rock'n'roll li'l '90s 'em 'cause",
    "It\u2019s a dog\u2019s life, isn\u2019t it? \u2018Yes\u2019", "well- known, e-mail, x-ray, t-shirt",
    "a 10-foot wave, 3.5-inch screen, mid-1990s, 1-year-old", "3.14 .5 5. 1,000,000 -5 +3 2nd 1990s",
    "12/25/2015 and/or man/woman a/b/c/d 50/50 24/7", "\u00bd \u00bc \u00be cup of \u00a35 and \u20ac5",
    "(a) [b] {c} <d> <<e>>", "hmm... ok.... fine. . . yes", "wow!!! great?! really?? no!",
    "----- --- -- - \u2013 \u2014", "x = y + z % w ~ v ^ u | t * s & r @ q # p",
    "AT&T and R&B, rock&roll, S&P-500", "e.g. i.e. etc. vs. a.m. p.m. U.S.A. Jan. Mass. no. 5",
    "the letter I. He said", "a letter a. the end", "visit www.example.com/page or foo@bar.com",
    "http://x.com/a?b=c, #hashtag @user", ":) :( ;-) :D ^_^", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 Z\u00fcrich",
    "\u201cquoted\u201d \u2018single\u2019 \u00abguill\u00bb \u201ebottom\u201c", "gimme lemme gotta wanna",
    "The C++ and C# books", "pro- anti- anti-war pro-choice non-U.S. re-enter",
    "img01.jpg 4x.png photo.jpeg", "<br/> tags <a href='x'> and </s>", "a\ttab\u00a0nbsp\u3000wide",
    "an empty-looking line", "", "   ", "A DOG. The CAT.", "Jan. The cat", "5\u00b0C and 20\u00b0F",
]

_FRAGMENTS = ("a man A Man the The dog dogs' dog's it's don't can't I'm you're cannot gonna Mr. St. "
              "Jan. U.S. e.g. a. I. 5 3.5 1,000 10:30 5pm 1/2 $5 5% t-shirt black-and-white and/or "
              "( ) [ ] \" ' ` `` '' \u201c \u201d \u2018 \u2019 - -- --- \u2014 \u2026 ... . .. , ; : "
              "? ! ?? & &amp; * = + # @ <unk> :) caf\u00e9 \u00bd \u00a3 o'clock y'all 'tis").split()


def _generated_captions(n, seed=0):
  """Captions built from the fragments the tokenizers treat differently, glued or spaced."""
  rng = random.Random(seed)
  return ["".join(rng.choice(_FRAGMENTS) + rng.choice([" ", " ", " ", ""])
                  for _ in range(rng.randint(1, 10))) for _ in range(n)]


def test_python_tokenizer_gives_the_jars_known_outputs():
  assert captions.ptb_tokenize([c for c, _ in JAR_OUTPUTS]) == [t for _, t in JAR_OUTPUTS]


def test_python_tokenizer_looks_across_captions_as_the_jar_does():
  """A one-letter "a." ends a sentence only when the next text starts one, even on the next line."""
  assert captions.ptb_tokenize(["letter a.", "The dog"]) == ["letter a", "the dog"]
  assert captions.ptb_tokenize(["letter a.", "the dog"]) == ["letter a.", "the dog"]


def test_line_breaks_inside_captions_do_not_shift_the_captions_after_them():
  assert captions.ptb_tokenize(["a\rb", "c\u2028d", "e"]) == ["a b", "c d", "e"]


@needs_java
def test_python_tokenizer_equals_ptbtokenizer():
  texts = VARIED + _generated_captions(400)
  java, python = captions.java_ptb_tokenize(texts), captions.ptb_tokenize(texts)
  differ = [(t, j, p) for t, j, p in zip(texts, java, python) if j != p]
  assert not differ, differ[:5]
  assert captions.java_ptb_tokenize(["a\rb", "c"]) == ["a b", "c"]


def _records():
  refs = {"img1": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave.",
                   "Someone is surfing in the ocean."],
          "img2": ["Two dogs playing with a frisbee in the park.", "Dogs chase a red frisbee.",
                   "Two dogs aren't sleeping; they're playing!"],
          "img3": ["A plate with a hot dog and fries (with ketchup).", "A hot-dog on a plate.",
                   "Lunch: a 12-inch hot dog, fries & a soda."],
          "img4": ["A clock on the tower shows 10:30.", "The big clock reads half past ten."]}
  generated = {"img1": "a man riding a wave on a surfboard", "img2": "two dogs play with a frisbee",
               "img3": "a hot dog and fries on a plate", "img4": "a clock tower at 10:30"}
  return generated, refs


@needs_java
def test_scores_equal_pycocoevalcap_with_its_ptbtokenizer():
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
  generated, refs = _records()
  # COCOEvalCap.evaluate: annotations per image, tokenised in two calls, then the scorers.
  tokenizer = PTBTokenizer()
  gts = tokenizer.tokenize({i: [{"caption": c} for c in refs[i]] for i in refs})
  res = tokenizer.tokenize({i: [{"caption": generated[i]}] for i in refs})
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  want = dict({f"bleu_{n}": b for n, b in enumerate(bleu, 1)}, cider=cider, count=4)
  for name in ("java", "python"):
    got = captions.scores(generated, refs, tokenizer=name)
    assert got == dict(want, tokenizer=name), name


def test_scores_do_not_depend_on_record_order():
  generated, refs = _records()
  want = captions.scores(generated, refs, tokenizer="python")
  for seed in range(3):
    ids = list(refs)
    random.Random(seed).shuffle(ids)
    got = captions.scores({i: generated[i] for i in reversed(ids)}, {i: refs[i] for i in ids},
                          tokenizer="python")
    assert got.pop("tokenizer") == want["tokenizer"]
    assert got == pytest.approx({k: v for k, v in want.items() if k != "tokenizer"}, rel=1e-12)


def test_each_caption_is_scored_against_its_own_references():
  """A caption equal to every one of its references scores BLEU 1; misaligned references would not."""
  refs = {"a": ["a man riding a big wave"] * 2, "b": ["two dogs chase a red frisbee"] * 3}
  got = captions.scores({"b": "two dogs chase a red frisbee", "a": "a man riding a big wave"}, refs,
                        tokenizer="python")
  assert got["bleu_4"] == pytest.approx(1.0) and got["bleu_1"] == pytest.approx(1.0)
  worse = captions.scores({"a": "two dogs chase a red frisbee", "b": "a man riding a big wave"}, refs,
                          tokenizer="python")
  assert worse["bleu_4"] < 0.1 and worse["cider"] < got["cider"]


def test_without_java_the_python_tokenizer_is_used(monkeypatch):
  monkeypatch.setattr(captions.shutil, "which", lambda name: None)
  generated, refs = _records()
  assert captions.scores(generated, refs)["tokenizer"] == "python"


def test_scores_refuse_mismatched_ids_and_unknown_tokenizers():
  generated, refs = _records()
  shifted = {k: v for k, v in generated.items() if k != "img4"} | {"img9": "x"}
  with pytest.raises(ValueError, match=r"missing \['img4'\], extra \['img9'\]"):
    captions.scores(shifted, refs)
  with pytest.raises(ValueError, match="tokenizer must be one of"):
    captions.scores(generated, refs, tokenizer="nltk")
  with pytest.raises(ValueError, match="'img1': need a generated string"):
    captions.scores(dict(generated, img1=None), refs, tokenizer="python")


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def test_read_caption_records(tmp_path):
  good = json.dumps({"image": "a.png", "captions": ["a cat", "a small cat"]})
  path = _write(tmp_path / "caps.jsonl", [good, "", good])
  assert [r["captions"] for r in captions.read_caption_records(path)] == [["a cat", "a small cat"]] * 2


@pytest.mark.parametrize("record, message", [
    ("{not json", r"caps.jsonl:2: not JSON"),
    ('["a.png"]', r"caps.jsonl:2: expected an object, got list"),
    ('{"captions": ["a"]}', r'caps.jsonl:2: missing "image"'),
    ('{"image": "a.png"}', r'caps.jsonl:2: missing "captions"'),
    ('{"image": "", "captions": ["a"]}', r'caps.jsonl:2: "image" must be a non-empty string'),
    ('{"image": "a.png", "captions": "a cat"}', r'caps.jsonl:2: "captions" must be a non-empty list'),
    ('{"image": "a.png", "captions": []}', r'caps.jsonl:2: "captions" must be a non-empty list'),
    ('{"image": "a.png", "captions": ["a", 3]}', r'caps.jsonl:2: "captions" must be a non-empty list'),
    ('{"image": "a.png", "captions": ["a", " "]}', r'caps.jsonl:2: "captions" must be a non-empty list'),
])
def test_bad_caption_records_name_the_file_line_and_field(tmp_path, record, message):
  path = _write(tmp_path / "caps.jsonl", [json.dumps({"image": "a.png", "captions": ["ok"]}), record])
  with pytest.raises(DataError, match=message):
    captions.read_caption_records(path)


def test_an_empty_caption_file_is_refused(tmp_path):
  with pytest.raises(DataError, match=r"caps.jsonl: no records"):
    captions.read_caption_records(_write(tmp_path / "caps.jsonl", ["", "  "]))
