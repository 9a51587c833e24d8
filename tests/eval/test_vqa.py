"""VQA scores (eval/vqa.py): the official vqaEval.py normalisation and leave-one-out accuracy, its
quirks included, exact match, DocVQA's ANLS at and around its threshold, and bad records refused
with the file, line and field named."""

import json

import pytest

from synergen_jax.core.errors import DataError
from synergen_jax.eval import vqa


@pytest.mark.parametrize("raw, normalised", [
    ("Two", "2"), ("none", "0"), ("Ten dogs", "10 dogs"),          # number words
    ("the dog", "dog"), ("An apple", "apple"), ("a b c", "b c"),    # articles
    ("isnt", "isn't"), ("whats up", "what's up"), ("Im", "im"),     # contractions ("Im": never)
    ("3.5", "3.5"), (".5", ".5"), ("dog.", "dog"), ("e.g.", "eg"),  # periods before digits stay
    ("yes!", "yes"), ("black/white", "black white"), ("red, white", "red white"),
    ("1,000", "1000"),                   # a digit-group comma deletes every mark instead
    ("\tdog\n", "dog"), ("t-shirt", "t shirt"), ("(left)", "left"), ("o'clock", "o'clock"),
])
def test_normalisation(raw, normalised):
  assert vqa.normalise_answer(raw) == normalised


def test_only_the_first_32_periods_go():
  """vqaEval passes re.UNICODE (32) as periodStrip.sub's count."""
  assert vqa.normalise_answer("." * 40) == "." * 8


def _ten(prediction_matches, answer="cat", other="dog"):
  return [answer] * prediction_matches + [other] * (10 - prediction_matches)


@pytest.mark.parametrize("humans, accuracy", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0),
                                              (10, 1.0)])
def test_accuracy_when_some_of_ten_humans_agree(humans, accuracy):
  assert vqa.vqa_accuracy("cat", _ten(humans)) == pytest.approx(accuracy)


def test_answers_are_normalised_only_when_the_humans_disagree():
  assert vqa.vqa_accuracy("two", ["2"] * 10) == 0.0
  assert vqa.vqa_accuracy("Two.", ["2"] * 9 + ["3"]) == pytest.approx(1.0)
  assert vqa.vqa_accuracy("2", ["2"] * 10) == 1.0


def test_fewer_than_ten_answers_score_matches_over_min_3_n():
  assert vqa.vqa_accuracy("Cat.", ["cat"]) == 1.0              # single answers (GQA): normalised match
  assert vqa.vqa_accuracy("dog", ["cat"]) == 0.0
  assert vqa.vqa_accuracy("cat", ["cat"] * 3) == 1.0
  assert vqa.vqa_accuracy("two", ["2", "2", "dog", "cow", "dog"]) == pytest.approx(2 / 3)
  assert vqa.vqa_accuracy("cat", ["cat", "dog"]) == pytest.approx(1 / 2)


def test_exact_match_after_normalisation():
  assert vqa.exact_match("Two dogs.", ["2 dogs", "dogs"]) == 1.0
  assert vqa.exact_match("two", ["2"]) == 1.0             # unlike the accuracy's raw comparison
  assert vqa.exact_match("cat", ["dog", "cats"]) == 0.0


@pytest.mark.parametrize("prediction, answers, score", [
    ("Hello World", ["hello world"], 1.0),
    ("  hello   world ", ["hello world"], 1.0),              # whitespace collapsed for the distance
    ("hello worle", ["hello world"], 1 - 1 / 11),
    ("abcd", ["axyd"], 0.5),                                  # at the threshold: kept
    ("abc", ["axy"], 0.0),                                    # 1 - 2/3 < 0.5
    ("cat", ["dog", "cat"], 1.0),                             # the best answer counts
    ("", [""], 1.0),
    ("", ["abc"], 0.0),
])
def test_anls(prediction, answers, score):
  assert vqa.anls(prediction, answers) == pytest.approx(score)


def test_scores_average_over_pairs():
  pairs = [("cat", _ten(3)), ("dog", _ten(10, "dog")), ("abcd", ["axyd"])]
  got = vqa.scores(pairs)
  assert got["count"] == 3
  assert got["accuracy"] == pytest.approx((0.9 + 1.0 + 0.0) / 3)
  assert got["exact_match"] == pytest.approx(2 / 3)
  assert got["anls"] == pytest.approx((1.0 + 1.0 + 0.5) / 3)
  with pytest.raises(ValueError, match="no \\(prediction, answers\\) pairs"):
    vqa.scores([])
  with pytest.raises(ValueError, match="non-empty answer list"):
    vqa.scores([("cat", [])])


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def test_read_vqa_records(tmp_path):
  good = json.dumps({"image": "a.png", "question": "what?", "answers": ["cat", ""]})
  records = vqa.read_vqa_records(_write(tmp_path / "vqa.jsonl", ["", good]))
  assert records == [{"image": "a.png", "question": "what?", "answers": ["cat", ""]}]


@pytest.mark.parametrize("record, message", [
    ("{not json", r"vqa.jsonl:2: not JSON"),
    ('"a.png"', r"vqa.jsonl:2: expected an object, got str"),
    ('{"question": "q?", "answers": ["a"]}', r'vqa.jsonl:2: missing "image"'),
    ('{"image": "a.png", "answers": ["a"]}', r'vqa.jsonl:2: missing "question"'),
    ('{"image": "a.png", "question": "q?"}', r'vqa.jsonl:2: missing "answers"'),
    ('{"image": 3, "question": "q?", "answers": ["a"]}', r'vqa.jsonl:2: "image" must be a non-empty'),
    ('{"image": "a.png", "question": " ", "answers": ["a"]}', r'vqa.jsonl:2: "question" must be a'),
    ('{"image": "a.png", "question": "q?", "answers": []}', r'vqa.jsonl:2: "answers" must be a non-empty'),
    ('{"image": "a.png", "question": "q?", "answers": "a"}', r'vqa.jsonl:2: "answers" must be a non-empty'),
    ('{"image": "a.png", "question": "q?", "answers": ["a", 1]}', r'vqa.jsonl:2: "answers" must be a'),
])
def test_bad_vqa_records_name_the_file_line_and_field(tmp_path, record, message):
  good = json.dumps({"image": "a.png", "question": "q?", "answers": ["a"]})
  with pytest.raises(DataError, match=message):
    vqa.read_vqa_records(_write(tmp_path / "vqa.jsonl", [good, record]))


def test_an_empty_vqa_file_is_refused(tmp_path):
  with pytest.raises(DataError, match=r"vqa.jsonl: no records"):
    vqa.read_vqa_records(_write(tmp_path / "vqa.jsonl", [""]))


# Each benchmark's rule (eval/benchmarks.py), on cases worked out by hand from the official scripts.

from synergen_jax.eval import benchmarks  # noqa: E402


def test_vqav2_rule_is_vqaeval_and_needs_ten_answers():
  score = benchmarks.BENCHMARKS["vqav2"].score
  assert score("two", ["2"] * 10) == 0.0                       # humans agree: nothing normalised
  assert score("two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
  assert score("a dog", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(0.6)
  with pytest.raises(ValueError, match="vqav2 scores 10 human answers per question, got 1"):
    benchmarks.scores([("dog", ["dog"])], "vqav2")


@pytest.mark.parametrize("raw, processed", [
    ("Two", "2"), ("a dog", "dog"), ("What?", "what"), ("1,000", "1000"), ("isnt", "isn't"),
    ("the man's hat", "man 's hat"), ("dog.", "dog"), ("Yes!", "yes"),
])
def test_textvqa_answer_processor(raw, processed):
  assert benchmarks.evalai_normalise(raw) == processed


def test_textvqa_always_normalises():
  """Unlike vqaEval, MMF's evaluator processes the answers even when all 10 agree."""
  score = benchmarks.textvqa_accuracy
  assert score("two", ["2"] * 10) == 1.0 and benchmarks.BENCHMARKS["vqav2"].score("two", ["2"] * 10) == 0
  assert score("The Coca-Cola", ["coca cola"] * 1 + ["pepsi"] * 9) == pytest.approx(0.3)
  assert score("STOP", ["stop"] * 4 + ["go"] * 6) == 1.0


@pytest.mark.parametrize("prediction, answer, right", [
    ("Yes.", "yes", True), ("left", "Left", True), ("t-shirt", "tshirt", True),
    ("a dog", "dog", False),           # no article removal: lowercase and punctuation only
    ("two", "2", False), ("dog ", "dog", False),
])
def test_gqa_exact_match(prediction, answer, right):
  assert benchmarks.gqa_exact_match(prediction, [answer]) == float(right)


@pytest.mark.parametrize("prediction, answer, right", [
    ("4.9", "5", True),                 # 2% off
    ("4.74", "5", False),               # 5.2% off
    ("4.75", "5", True),                # exactly 5%
    ("52%", "0.5", True),               # 0.52 vs 0.5: 4%
    ("50", "50%", False),               # 50 vs 0.5
    ("0", "0", True), ("0.01", "0", False),   # a zero target: exact string match only
    ("Brazil", "brazil", True), ("Brazil ", "brazil", False),
    ("1e3", "1000", True),              # Python's float syntax, as pix2struct's
])
def test_chartqa_relaxed_correctness(prediction, answer, right):
  assert benchmarks.relaxed_correctness(answer, prediction) == right


def test_docvqa_anls_partial_credit():
  score = benchmarks.BENCHMARKS["docvqa"].score
  assert score("1O/20/2011", ["10/20/2011"]) == pytest.approx(0.9)      # one character off in 10
  assert score("Smith", ["J. Smith", "smith"]) == 1.0                  # the best answer counts
  assert score("abc", ["xyz"]) == 0.0


def test_benchmark_scores_name_their_rule_and_strip_the_answer():
  got = benchmarks.scores([(" 4.9\n", ["5"]), ("red", ["blue"])], "chartqa")
  assert got["relaxed_accuracy"] == got["score"] == 0.5 and got["count"] == 2
  assert got["benchmark"] == "chartqa" and "5%" in got["rule"] and "pix2struct" in got["source"]


def test_ten_answer_benchmarks_refuse_other_counts_by_line(tmp_path):
  lines = [json.dumps({"image": "a.png", "question": "q?", "answers": ["a"] * 10}),
           json.dumps({"image": "a.png", "question": "q?", "answers": ["a"] * 3})]
  path = _write(tmp_path / "vqa.jsonl", lines)
  assert len(vqa.read_vqa_records(path)) == 2
  with pytest.raises(DataError, match=r"vqa.jsonl:2: 3 \"answers\"; .* needs 10"):
    vqa.read_vqa_records(path, 10)
