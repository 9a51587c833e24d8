"""Captioning scores as the MSCOCO caption evaluation computes them: BLEU-1..4 and CIDEr from
pycocoevalcap's own Bleu and Cider scorers, on captions tokenised as its PTBTokenizer does it.

PTBTokenizer runs Stanford CoreNLP 3.4.1's PTBTokenizer (a Java jar inside pycocoevalcap) with
-preserveLines -lowerCase and drops the tokens in PUNCTUATIONS. Java is used when `java` is on
PATH; otherwise `ptb_tokenize`, a Python port of the jar's lexer written from CoreNLP's
PTBLexer.flex and corrected against the 3.4.1 jar until they agreed on tens of thousands of
generated captions (tests/eval/test_captions.py keeps a seeded sample of that comparison). The
result names the tokenizer that ran. Known differences: letters of scripts whose Unicode tables
differ between the jar and Python (mostly marks and recent additions outside Latin, Greek,
Cyrillic, Hebrew, Arabic, Devanagari, CJK), a Greek final sigma followed by digits, and a few
digit-led tokens such as "4567D.C"; English captions do not meet them.

What the jar does, and the port copies, because it changes the n-grams:
  - brackets become -lrb- -rrb- -lsb- ... and, lowercased, survive the (upper case) filter list;
  - "don't" -> "do n't", "cannot" -> "can not", "gonna" -> "gon na", "dog's" -> "dog 's";
  - hyphenated words, "3.5", "1,000", "10:30", "3 1/2", "man/woman", "u.s." and "mr." stay whole;
  - "??" and "!!!" stay (only a single "?" or "!" is filtered), "---" becomes "--";
  - the lexer looks across line ends, and pycocoevalcap writes all captions as one file, so the
    references and the generated captions are each tokenised as one text, in record order.
CIDEr is pycocoevalcap's Cider, which is CIDEr-D as the COCO server reports it (clipped n-gram
counts, Gaussian length penalty, x10). Its idf comes from the references being scored: compare
CIDEr across runs only over the same reference set.
"""

from __future__ import annotations

import functools
import re
import shutil
from typing import Callable, Mapping, Sequence

from synergen_jax.core.errors import DataError
from synergen_jax.data import jsonl

# pycocoevalcap/tokenizer/ptbtokenizer.py's PUNCTUATIONS, compared after lowercasing (so "-LRB-"
# never matches there either).
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!",
                          ",", ":", "-", "--", "...", ";"])
# Line breaks of the jar's lexer besides "\n": pycocoevalcap replaces only "\n" by a space, so one
# of these inside a caption would shift every later caption by a line.
_LINE_BREAKS = re.compile("[\r\x0b\x0c\u2028\u2029]")


def _bmp_class(predicate: Callable[[str], bool]) -> str:
  """The body of a regex character class holding the BMP characters that satisfy predicate."""
  ranges, start = [], None
  for code in range(0x10001):
    inside = code < 0x10000 and not 0xD800 <= code < 0xE000 and predicate(chr(code))
    if inside and start is None:
      start = code
    elif not inside and start is not None:
      last = code - 1
      ranges.append(re.escape(chr(start)) + ("" if last == start else "-" + re.escape(chr(last))))
      start = None
  return "".join(ranges)


# Character classes of PTBLexer.flex ([:letter:], [:digit:], \p{Alpha}, [:uppercase:]).
_ALPHA = _bmp_class(str.isalpha)
_DIGIT = _bmp_class(str.isdecimal)
_UPPER = _bmp_class(str.isupper)
_ALNUM = _ALPHA + _DIGIT
# PTBLexer's LETTER adds the soft hyphen and these marks and modifier symbols to [:letter:].
_LETTER = _ALPHA + (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d"
    "\u0384\u0385\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525"
    "\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f"
    "\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f"
    "\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955"
    "\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3"
    "\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2"
    "\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48"
    "\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd")
_SPLET = r"&[aeiouAEIOU](?i:acute|grave|uml);"
_L = f"(?:[{_LETTER}]|{_SPLET})"
_LD = f"(?:[{_LETTER}{_DIGIT}]|{_SPLET})"
_SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
_SPACENL = "[ \t\u00a0\u2000-\u200a\u3000\n]"
_APOS = "(?:['\u0092\u2019]|(?i:&apos;))"
_APOSETC = "(?:['\u0092\u2019`\u0091\u2018\u201b]|(?i:&apos;))"
_WORD = f"{_L}{_LD}*(?:[.!?]{_L}{_LD}*)*"
_REDAUX = f"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
_SREDAUX = f"(?i:n){_APOSETC}(?i:t)"
_NUM_SEPARATED = f"[{_DIGIT}]*(?:[.:,\u00ad\u066b\u066c][{_DIGIT}]+)+"
_NUMBER = f"[-+]?(?:{_NUM_SEPARATED}|[{_DIGIT}]+)"
# Longest alternatives first: Python's regex takes the first alternative that matches.
_ACRO = ("(?:(?i:u\\.s\\.-(?:u\\.k|u\\.s\\.s\\.r))|(?i:canada|sino|korean|eu|japan|non)-(?i:u\\.s)"
         "|[A-Za-z](?:\\.[A-Za-z])*)")
_ACRO2 = _ACRO[:-2] + "+)"                                   # two letters or more: "U.S", not "U"
_INSENTP = "[,;:\u3001]"
# ASCII only in the jar, unlike WORD and THING: "résumé3.5-inch" is "résumé3" ".5" "-" "inch".
_HYPHENATED = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{_ACRO2}\\.|[A-Za-z0-9\u00ad]+))+"
_D_APOS_PREFIX = f"(?:[dDoOlL]{_APOSETC}[{_ALNUM}])"         # d'Avignon, o'clock
_CAPS_AND = "[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"           # AT&T, R&B
_THING = f"{_D_APOS_PREFIX}?[{_ALNUM}]+(?:[-_\u058a\u2010\u2011]{_D_APOS_PREFIX}?[{_ALNUM}]+)*"


def _caseless(words: str) -> str:
  """Alternation of space-separated words, matched in any case as PTBLexer's literals are."""
  return "(?i:" + "|".join(words.split()) + ")"


def _capitalised(words: str) -> str:
  """Alternation of words whose first letter must be as written (PTBLexer's "[M]iss")."""
  return "|".join(w[0] + f"(?i:{w[1:]})" if len(w) > 1 else w for w in words.split())


# Abbreviations of the 3.4.1 jar (probed one by one): ABBREV1 may end a sentence, ABBREV2 never
# does, ABBREV3 keeps its period only before a number.
_ABBREV1 = ("(?:" + _caseless(
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri "
    "ala ariz calif colo conn ct dak fla ga ind kans? ky md mich minn mo mont neb nev okla penn "
    "tenn va vt wisc? wyo inc cos? corp pp?t[ye]s? ltd plc rt bancorp bhd assn univ intl sys tel "
    "est ext sq jr sr bros (?:ed|ph)\\.d esq etc al seq bldg")
    + "|" + _capitalised("Az Ark Del Ill La Mass Miss Ore Pa Tex Wash") + ")\\.")
_ABBREV2 = ("(?:" + _caseless(
    "mr mrs ms drs? profs? sens? reps? attys? lt col gen messrs govs? adm rev maj sgt cpl pvt "
    "capt ste? ave pres lieut rt hon brig co?mdr pfc spc supts? det mt ft adj adv asst assoc ens "
    "insp mlle mme msgr sfc sr vs alex wm jos cie a\\.k\\.a cf treas ph invt elec natl m[ft]g dept "
    "blvd rd") + "|" + _capitalised("Miss") + "|v|" + _ACRO + ")\\.")
_ABBREV3 = "(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\\."
# Capitalised words after which a one-letter "X." ends the sentence (the jar's list).
_SENTENCE_STARTS = _capitalised(
    "About According Additionally After An A As At But Earlier He Her Here However If In It Last "
    "Many More Mr\\. Ms\\. Now Once One Other Our She Since So Some Such That The Their Then There "
    "These They This We When While What Yet You")

_APOWORDS = (
    f"{_APOS}(?i:n){_APOS}?", f"[lLdDjJ]{_APOS}", f"(?i:dunkin|somethin|ol){_APOS}",
    f"{_APOS}(?i:em|till?|cause)", f"(?i:diff){_APOSETC}(?i:rent)",
    f"[A-HJ-XZn]{_APOSETC}[{_ALPHA}]{{2,}}", f"{_APOS}[2-9]0(?i:s)",
    f"[{_ALPHA}]+[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z][{_ALPHA}]*",
    "(?i:cont'd\\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)", f"O{_APOSETC}o")
_QUOTE = f"[`\u2018-\u201f\u0091-\u0094\u2039\u203a\u00ab\u00bb]{{1,2}}|{_APOS}"
# A quote before a letter opens a quotation, except a curly apostrophe ("it’s" is "it" + "’s").
_OPENING_QUOTE = "'|[`\u2018\u201a-\u201f\u0091\u0093\u0094\u2039\u203a\u00ab\u00bb]{1,2}"
_DOUBLE_QUOTE = "\"|(?i:&quot;)|''"
# Symbols kept as tokens of their own (others outside the rules are deleted, as the jar does).
_MISC_SYMBOL = ("[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7"
                "\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614"
                "\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u1fbd\u2016"
                "\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e"
                "\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20"
                "\uff3b-\uff40\uff5b-\uff65]")
_PHONE = ("(?:\\([0-9]{2,3}\\)[ \u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
          "[0-9]{3,4}[- \u00a0]?[0-9]{3,5}"
          "|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}")    # "11-20 1990-2000" too
_FILE_EXTENSIONS = _caseless("bat bmp c class cgi cpp dll docx? exe gif gz h html? jar java jpe?g mov "
                             "mp3 pdf php pl png ppt ps py sql tar txt wav x xml zip")

_SGML_NAME = "[A-Za-z][A-Za-z0-9_:.-]*"
_SGML = (f"<(?:[!?][A-Za-z-][^>\r\n]*|/{_SGML_NAME}|{_SGML_NAME}(?: +{_SGML_NAME}"
         f"(?: *= *(?:'[^']*'|\"[^\"]*\"))?)* */?) *>")    # <unk>, </s>, <br/>

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u00a4": "$", "\u0080": "$", "\u20a0": "$",
             "\u20ac": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}


def _quotes(text: str, probably_left: bool) -> str:
  """PTBLexer's latexQuotes: ASCII quotes by position, curly and CP1252 ones by their shape."""
  for pattern, left, right in ((r"(?i:&apos;)|'", "`", "'"), (r"\"|''|(?i:&quot;)", "``", "''")):
    text = re.sub(pattern, left if probably_left else right, text)
  for pattern, replacement in (("[\u0091\u2018\u201b\u2039]", "`"), ("[\u0092\u2019\u203a]", "'"),
                               ("[\u0093\u201c\u00ab]", "``"), ("[\u0094\u201d\u00bb]", "''")):
    text = re.sub(pattern, replacement, text)
  return text


def _no_soft_hyphens(text: str) -> str:
  return text.replace("\u00ad", "")


def _ampersands(text: str) -> str:
  return re.sub("(?i:&amp;)", "&", text)


def _parens(text: str) -> str:
  return text.replace("(", "-LRB-").replace(")", "-RRB-")


# An action maps the matched text to (tokens, characters consumed); consuming fewer characters
# than matched is JFlex's yypushback.
def _emit(transform=lambda text: text):
  return lambda text: ([transform(text)], len(text))


def _push_back(count: int):
  return lambda text: ([text[:-count]], len(text) - count)


def _one_letter_acronym(text: str):
  """processAcronym: "I." ends a sentence as "I" "."; "U.S." as "U.S." and a repeated "."."""
  return ([text[0]], 1) if len(text) == 2 else ([text], len(text) - 1)


def _period_again(text: str):
  return [text], len(text) - 1


def _skip(text: str):
  return [], len(text)


def _dashes(text: str):
  return ["--" if 3 <= len(text) <= 4 else text], len(text)


_KEEP = _emit()
_NEWLINE = object()

# (pattern, trailing context or None, action), in PTBLexer.flex's order: the longest match
# (trailing context included) wins, ties go to the earlier rule.
_RULES = [
    ("(?i:c\\+\\+|[cf]#)", None, _KEEP),
    ("(?i:cannot|'twas)", None, _push_back(3)),
    ("(?i:'tis|gonna|gotta|lemme|gimme|wanna)", None, _push_back(2)),
    (_SGML, None, _emit(lambda t: re.sub("[ \r\n]", "\u00a0", t))),
    ("&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, _emit(lambda _: "--")),
    ("(?i:&amp;)", None, _emit(lambda _: "&")),
    ("&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);", None, _KEEP),
    (_WORD, _REDAUX, _emit(_no_soft_hyphens)),
    ("[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", _SREDAUX, _emit(_no_soft_hyphens)),
    (_WORD, None, _emit(_no_soft_hyphens)),
    *((apoword, None, _KEEP) for apoword in _APOWORDS),
    (f"(?i:y){_APOS}", f"[{_ALPHA}]", _KEEP),
    ("(?i:ftp|svn|svn\\+ssh|http|https|mailto)://[^ \t\n\f\r\"<>|(){}]+"
     "[^ \t\n\f\r\"<>|.!?(){},-]", None, _KEEP),
    *((f"(?:(?:(?i:www)\\.(?:[^{host}]+\\.)+[a-zA-Z]{{2,4}})"
       "|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\\.)+(?i:com|net|org|edu)))"
       "(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?", None, _KEEP)
      # The jar's host may hold a "/"; without one, a path after the host can be the longer match.
      for host in (" \t\n\f\r\"<>|.!?(){},", " \t\n\f\r\"<>|.!?(){},/")),
    ("(?:(?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\\.)*"
     "[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:(?i:&gt;)|>)?", None, _KEEP),
    (f"[@\uff20][a-zA-Z_][a-zA-Z_0-9]*|[#\uff03]{_L}+", None, _KEEP),
    (_REDAUX, "[^A-Za-z]", _emit(lambda t: _quotes(t, False))),
    (_SREDAUX, "[^A-Za-z]", _emit(lambda t: _quotes(t, False))),
    (f"[{_DIGIT}]{{1,2}}[-/][{_DIGIT}]{{1,2}}[-/][{_DIGIT}]{{2,4}}", None, _KEEP),
    (_NUMBER, None, _emit(_no_soft_hyphens)),
    ("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", None,
     _KEEP),
    (f"(?:[{_DIGIT}]{{1,4}}[- \u00a0])?[{_DIGIT}]{{1,4}}(?:\\\\?/|\u2044)[{_DIGIT}]{{1,4}}", None,
     _emit(lambda t: t.replace(" ", "\u00a0"))),
    ("[\u00bc\u00bd\u00be\u2153-\u215e]", None, _emit(lambda t: _FRACTIONS.get(t, t))),
    (f"(?i:-(?:rrb|lrb|rcb|lcb|rsb|lsb)-|c\\.d\\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls"
     f"|cap{_APOS}n|c{_APOS}est)", None, _emit(_ampersands)),
    ("[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None, _KEEP),
    ("[A-Z]*\\$|#", None, _KEEP),
    ("[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", None,
     _emit(lambda t: _CURRENCY.get(t, t))),
    (f"{_ACRO}\\.", f"{_SPACENL}+(?:{_SENTENCE_STARTS}|{_SGML}){_SPACENL}", _one_letter_acronym),
    (_ABBREV3, f"{_SPACENL}?[{_DIGIT}]", _KEEP),
    (_ABBREV1, f"{_SPACENL}(?:{_SPACENL}|[{_UPPER}])", _period_again),
    (_ABBREV1, "(?s:..)", _KEEP),
    (_ABBREV1, None, _period_again),
    (_ABBREV2, None, _KEEP),
    (f"{_APOS}[0-9][0-9]", _SPACENL, _KEEP),
    (f"[{_ALNUM}]+(?:\\.[{_ALNUM}]+)*\\.{_FILE_EXTENSIONS}", f"{_SPACENL}|[.?!,]", _KEEP),
    (f"{_WORD}\\.", _INSENTP, _emit(_no_soft_hyphens)),
    (_PHONE, None, _emit(lambda t: _parens(t.replace(" ", "\u00a0")))),
    (_DOUBLE_QUOTE, f"[{_ALNUM}$]", _emit(lambda t: _quotes(t, True))),
    (_DOUBLE_QUOTE, None, _emit(lambda t: _quotes(t, False))),
    ("<|(?i:&lt;)", None, _emit(lambda _: "<")),
    (">|(?i:&gt;)", None, _emit(lambda _: ">")),
    ("[<>]?[:;=][-o*']?[()DPdpO\\\\{@|\\[\\]]", "[^A-Za-z0-9]", _emit(_parens)),
    ("[\\^x=~<>]\\.\\[\\^x=~<>]|[-\\^x=~<>']_[-\\^x=~<>']|\\([-\\^x=~<>'][_.]?[-\\^x=~<>']\\)"
     "|\\([\\^x=~<>']-[\\^x=~<>'`]\\)", None, _emit(_parens)),
    ("[(){}\\[\\]]", None, _emit(_BRACKETS.get)),
    ("-+", None, _dashes),
    ("\\.\\.\\.+|[\u0085\u2026]", f"\\.{_SPACENL}+[{_ALPHA}]", _emit(lambda _: "...")),
    ("\\.[ \u00a0](?:\\.[ \u00a0])+\\.", f"{_SPACE}\\.{_SPACENL}+[{_ALPHA}]", _emit(lambda _: "...")),
    ("\\.\\.\\.+|[\u0085\u2026]|\\.[ \u00a0](?:\\.[ \u00a0])+\\.", None, _emit(lambda _: "...")),
    ("@+|#+|_+|\\*+|(?:\\\\\\*){1,3}", None, _KEEP),
    (_INSENTP, None, _KEEP),
    ("[?!]+", None, _KEEP),
    ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", None, _KEEP),
    ("[=/]", None, _KEEP),
    (_HYPHENATED, None, _emit(_no_soft_hyphens)),
    (_HYPHENATED + "\\.", _INSENTP, _emit(_no_soft_hyphens)),
    (_THING, None, _KEEP),
    (_THING + "\\.", _INSENTP, _KEEP),
    (_CAPS_AND, None, _emit(_ampersands)),
    (_CAPS_AND + "\\.", _INSENTP, _emit(_ampersands)),
    (_OPENING_QUOTE, f"[{_ALPHA}][^ \t\u00a0\u2000-\u200a\u3000\n]", _emit(lambda t: _quotes(t, True))),
    (_QUOTE, None, _emit(lambda t: _quotes(t, False))),
    (_REDAUX, None, _emit(lambda t: _quotes(t, False))),
    (_SREDAUX, None, _emit(lambda t: _quotes(t, False))),
    ("<<|>>", None, _KEEP),
    (_MISC_SYMBOL, None, _KEEP),
    (f"{_SPACE}+", None, _skip),
    ("[\x00\x7f\u200b\u200e\u200f\ufeff]|(?i:&nbsp;)", None, _skip),
    ("\n", None, lambda text: ([_NEWLINE], 1)),
]


# Shortcut for most of a caption: every rule makes an ASCII word before a space that word alone,
# except the words the first rules split ("can" "not").
_PLAIN_WORD = re.compile("[A-Za-z]+(?= )")
_SPACES = re.compile(f"{_SPACE}+")                         # the only rule that matches at " "
_SPLIT_WORDS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])


@functools.lru_cache(maxsize=1)
def _compiled_rules():
  rules = []
  for pattern, context, action in _RULES:
    source = f"(?:{pattern})" + (f"(?=(?P<context>{context}))" if context else "")
    rules.append((re.compile(source), context is not None, action))
  return rules


def _lex(text: str) -> list[list[str]]:
  """PTBLexer over text: its tokens, one list per line (unmatched characters are dropped)."""
  rules, lines, line, pos = _compiled_rules(), [], [], 0
  while pos < len(text):
    plain = _PLAIN_WORD.match(text, pos)
    if plain is not None and plain.group(0).lower() not in _SPLIT_WORDS:
      line.append(plain.group(0))
      pos = plain.end()
      continue
    if text[pos] == " ":
      pos = _SPACES.match(text, pos).end()
      continue
    best, best_length = None, 0
    for pattern, has_context, action in rules:
      match = pattern.match(text, pos)
      if match is not None:
        length = (match.end("context") if has_context else match.end()) - pos
        if length > best_length:
          best, best_length = (match.group(0), action), length
    if best is None:
      pos += 1
      continue
    tokens, consumed = best[1](best[0])
    pos += consumed
    for token in tokens:
      if token is _NEWLINE:
        lines.append(line)
        line = []
      else:
        line.append(token)
  return lines + [line]


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
  """What pycocoevalcap's PTBTokenizer returns for these captions, in order, without Java."""
  text = "\n".join(_LINE_BREAKS.sub(" ", c.replace("\n", " ")) for c in captions)
  lines = [" ".join(token.lower() for token in line if token) for line in _lex(text)]
  # As pycocoevalcap reads the jar's output lines.
  return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
          for line in lines[:len(captions)]]


def java_ptb_tokenize(captions: Sequence[str]) -> list[str]:
  """pycocoevalcap's PTBTokenizer itself (needs `java`), one caption per key to keep the order."""
  from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
  keyed = {i: [{"caption": _LINE_BREAKS.sub(" ", c)}] for i, c in enumerate(captions)}
  tokenized = PTBTokenizer().tokenize(keyed)
  return [tokenized[i][0] for i in range(len(captions))]


TOKENIZERS = {"java": java_ptb_tokenize, "python": ptb_tokenize}


def scores(generated: Mapping[str, str], references: Mapping[str, Sequence[str]],
           tokenizer: str | None = None) -> dict:
  """BLEU-1..4 and CIDEr of one generated caption per id against that id's reference captions.

  tokenizer: "java" (pycocoevalcap's PTBTokenizer), "python" (ptb_tokenize) or None for java
  when `java` is on PATH, else python."""
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  if set(generated) != set(references):
    missing, extra = set(references) - set(generated), set(generated) - set(references)
    raise ValueError(f"generated and reference ids differ: missing {sorted(missing)[:5]}, "
                     f"extra {sorted(extra)[:5]}")
  if not references:
    raise ValueError("no captions to score")
  for i, refs in references.items():
    if not isinstance(generated[i], str) or not refs or not all(isinstance(r, str) for r in refs):
      raise ValueError(f"{i!r}: need a generated string and a non-empty list of reference strings, "
                       f"got {generated[i]!r}, {refs!r}")
  tokenizer = tokenizer or ("java" if shutil.which("java") else "python")
  if tokenizer not in TOKENIZERS:
    raise ValueError(f"tokenizer must be one of {sorted(TOKENIZERS)}, got {tokenizer!r}")
  tokenize = TOKENIZERS[tokenizer]
  ids = list(references)
  flat_references = tokenize([c for i in ids for c in references[i]])
  hypotheses = tokenize([generated[i] for i in ids])
  gts, res, start = {}, {}, 0
  for k, i in enumerate(ids):
    gts[k] = flat_references[start:start + len(references[i])]
    res[k] = [hypotheses[k]]
    start += len(references[i])
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  return dict({f"bleu_{n}": float(b) for n, b in enumerate(bleu, 1)}, cider=float(cider),
              count=len(ids), tokenizer=tokenizer)


def read_caption_records(path: str) -> list[dict]:
  """{"image", "captions"} records of a jsonl file; errors name the file, line and field."""
  records = []
  for where, _, record in jsonl.records(path, required=("image", "captions")):
    if not isinstance(record["image"], str) or not record["image"].strip():
      raise DataError(f"{where}: \"image\" must be a non-empty string, got {record['image']!r}")
    captions = record["captions"]
    if (not isinstance(captions, list) or not captions
        or not all(isinstance(c, str) and c.strip() for c in captions)):
      raise DataError(f"{where}: \"captions\" must be a non-empty list of non-empty strings, "
                      f"got {captions!r}")
    records.append(record)
  return records
