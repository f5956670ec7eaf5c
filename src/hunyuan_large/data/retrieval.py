"""Synthetic retrieval documents in RULER's niah_single_1 and vt formats, as a training source.

A model this small learns to retrieve only if its data shows the task. `retrieval:docs=N,...` as a
data source yields N documents (seeded, deterministic): a noise haystack (RULER's five sentences,
repeated) holding either one needle "One of the special magic numbers for {key} is: {value}." at a
random depth, or one variable-tracking chain "VAR AAAAA = 12345" -> "VAR BBBBB = VAR AAAAA" ...;
then RULER's question and answer prefix, then the answer. Lengths are drawn uniformly in haystack
repeats, so some documents are long (the long-context stages' "long" category).
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass

from .sources import GENERATED, DataError, Document

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NIAH_INTRO = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
              "I will quiz you about the numbers afterwards.")
VT_INTRO = "Memorize and track the chain(s) of variable assignment hidden in the following text."
ADJECTIVES = ("able acid angry brave bright calm cheap clean clever cold cool crazy curly damp dark deep dry "
              "eager early easy empty fair fancy fast fierce flat fresh glad gentle giant golden grand green "
              "happy hard heavy hollow huge humble icy jolly kind large lazy light little lively loud lucky "
              "mad mellow mighty modern narrow neat new nice noisy odd old orange pale plain polite proud "
              "quick quiet rapid rare red rich rough round royal rusty sad safe sharp shiny short shy silent "
              "silly slim slow small smart smooth soft solid sour spicy steep sticky stiff strong sunny "
              "sweet swift tall tame tender thick thin tidy tiny tough vast warm weak wet white wide wild "
              "wise witty young").split()
NOUNS = ("apple arch badge basket bell berry bike bird blade boat bone book bottle bread brick bridge brush "
         "cabin cake camera candle canyon car carpet castle cat chair cherry cloud coast coin comet cotton "
         "crown cup desk dog door dragon drum eagle engine feather fence field flag flower forest fox frog "
         "garden gate ghost glove grape hammer harbor hat hill horse island jacket jewel kettle kite ladder "
         "lake lamp leaf lemon lion map mango meadow mirror moon mountain needle nest ocean orchard owl "
         "paint panda pencil piano pillow planet plum pocket pond pump queen rabbit river robot rocket rose "
         "saddle sail shell ship shoe spoon star stone storm sugar table tiger tower train tree trumpet "
         "tulip valley violin wagon whale window wolf zebra").split()


@dataclass
class Sample:
    """One task instance: the prompt (up to the answer prefix) and the strings the answer must hold."""

    prompt: str
    answers: list[str]

    @property
    def document(self) -> str:
        """The training text: prompt, then the answer as RULER's references would be written."""
        return f"{self.prompt} {' '.join(self.answers)}."


def _haystack(repeats: int, inserts: list[str], rng: random.Random) -> str:
    """`repeats` noise lines with `inserts` placed, in order, at random depths."""
    lines = [NOISE] * repeats
    for i, pos in enumerate(sorted(rng.sample(range(repeats + len(inserts)), len(inserts)))):
        lines.insert(pos, inserts[i])
    return "\n".join(lines)


def niah(repeats: int, rng: random.Random, depth: float | None = None) -> Sample:
    """niah_single_1: one 7-digit magic number for a word-pair key, at `depth` (0..1) or a random one."""
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    needle = f"One of the special magic numbers for {key} is: {value}."
    if depth is None:
        context = _haystack(repeats, [needle], rng)
    else:
        at = round(depth * repeats)
        context = "\n".join([NOISE] * at + [needle] + [NOISE] * (repeats - at))
    question = (f"What is the special magic number for {key} mentioned in the provided text? "
                f"The special magic number for {key} mentioned in the provided text is")
    return Sample(f"{NIAH_INTRO}\n{context}\n{question}", [value])


def vt(repeats: int, rng: random.Random, hops: int = 4) -> Sample:
    """vt: one chain of `hops` + 1 variables holding a 5-digit value, hidden in the noise."""
    names: list[str] = []
    while len(names) < hops + 1:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if name not in names:
            names.append(name)
    value = str(rng.randint(10_000, 99_999))
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
    context = _haystack(repeats, chain, rng)
    question = (f"Question: Find all variables that are assigned the value {value} in the text above. "
                f"Answer: According to the chain(s) of variable assignment in the text above, {len(names)} "
                f"variables are assgined the value {value}, they are:")  # RULER's spelling
    return Sample(f"{VT_INTRO}\n\n{context}\n{question}", names)


def parse_spec(spec: str) -> dict[str, float]:
    """'retrieval:docs=4000,max_repeats=100,vt=0.25,seed=0' -> its settings (defaults filled in)."""
    settings = {"docs": 1000.0, "min_repeats": 1.0, "max_repeats": 100.0, "vt": 0.25, "seed": 0.0}
    for item in filter(None, spec[len(GENERATED):].split(",")):
        key, _, value = item.partition("=")
        if key not in settings:
            raise DataError(f"unknown key {key!r} in data source {spec!r} (allowed: {', '.join(settings)})")
        try:
            settings[key] = float(value)
        except ValueError:
            raise DataError(f"{key} in data source {spec!r} must be a number, got {value!r}") from None
    if not 1 <= settings["min_repeats"] <= settings["max_repeats"] or not 0 <= settings["vt"] <= 1:
        raise DataError(f"data source {spec!r} needs 1 <= min_repeats <= max_repeats and 0 <= vt <= 1")
    return settings


def iter_retrieval(spec: str) -> Iterator[Document]:
    """The documents of a `retrieval:` source, in a fixed order."""
    s = parse_spec(spec)
    rng = random.Random(int(s["seed"]))
    for i in range(int(s["docs"])):
        repeats = rng.randint(int(s["min_repeats"]), int(s["max_repeats"]))
        sample = vt(repeats, rng) if rng.random() < s["vt"] else niah(repeats, rng)
        yield Document(f"{spec}#{i}", sample.document)
