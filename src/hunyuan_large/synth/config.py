"""`hunyuan synth` configs: one TOML with a table per step, backends by name, domains and seed sources."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, check, require
from .backends import BackendConfig
from .parsing import EXTRACTORS
from .prompts import EVOLVE, INSTRUCTION


@dataclass
class SeedSource:
    """A `[[seeds]]` entry: text (blank-line paragraphs), jsonl (one field) or code files (a glob)."""

    path: str
    kind: str = "text"  # "text", "jsonl" or "code"
    domain: str = "general"
    field: str = "text"  # jsonl: the field holding the seed text
    max_chars: int = 2000  # longer seeds are cut
    limit: int | None = None  # at most this many seeds from this source
    verbatim: bool = False  # the seed is the instruction itself: neither generated nor evolved
    answer_field: str | None = None  # jsonl: a reference answer, checked against the kept responses

    def __post_init__(self) -> None:
        check(self.kind in ("text", "jsonl", "code"), f"seeds: kind must be text, jsonl or code, got {self.kind!r}")
        check(self.answer_field is None or self.kind == "jsonl", "seeds: answer_field needs kind = \"jsonl\"")


@dataclass
class Domain:
    """A `[domains.NAME]` table: its instruction template, responder backend and answer extractor."""

    template: str | None = None  # default: prompts.INSTRUCTION[name] or the general one
    responder: str | None = None  # default: [respond].backend
    extractor: str | None = None  # "number" or "last_line": enables self-consistency voting

    def __post_init__(self) -> None:
        check(self.extractor is None or self.extractor in EXTRACTORS,
              f"domains: extractor must be one of {sorted(EXTRACTORS)}, got {self.extractor!r}")


@dataclass
class Generate:
    """Step 1: instructions from seeds, and from template prefixes."""

    backend: str
    per_seed: int = 1
    styles: list[str] = field(default_factory=lambda: ["concise", "detailed", "casual", "formal"])
    complexity: list[str] = field(default_factory=lambda: ["simple", "moderately hard", "challenging"])
    prefix_per_shard: int = 0  # instructions a chat model writes from the opening of a user turn alone
    prefix_system: str = ""
    max_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95


@dataclass
class Evolve:
    """Step 2: k rounds of rewrites, each eliminated if unchanged, leaky, a refusal, too short or too long."""

    backend: str
    rounds: int = 1
    methods: list[str] = field(default_factory=lambda: list(EVOLVE))
    min_chars: int = 10
    max_chars: int = 2000
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in EVOLVE]
        check(not bad, f"evolve: unknown methods {bad}; known: {sorted(EVOLVE)}")


@dataclass
class Respond:
    """Step 3: k samples per instruction (k > 1: self-consistency), by each domain's responder."""

    backend: str
    samples: int = 1
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95


@dataclass
class Filter:
    """Step 4: critique ratings, self-consistency votes, rule filters, MinHash near-duplicates."""

    critic: str | None = None  # a backend name; None: no ratings
    min_rating: float = 6.0
    drop_unparsable: bool = True  # an unrateable response cannot be chosen
    vote_share: float = 0.5  # the majority answer needs at least this share of the samples
    min_chars: int = 1
    max_chars: int = 8000
    dedup_threshold: float = 0.8  # estimated Jaccard of word 3-grams; 1: off
    num_perm: int = 128
    max_tokens: int = 128


@dataclass
class SynthConfig:
    """The whole pipeline."""

    out: str
    seeds: list[SeedSource]
    backends: dict[str, BackendConfig]
    generate: Generate
    evolve: Evolve
    respond: Respond
    filter: Filter
    domains: dict[str, Domain] = field(default_factory=dict)
    shard_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        names = {self.generate.backend, self.evolve.backend, self.respond.backend, self.filter.critic}
        names |= {d.responder for d in self.domains.values()}
        missing = sorted(n for n in names - {None} if n not in self.backends)
        require([(not missing, f"unknown backends {missing}; defined: {sorted(self.backends)}"),
                 (self.shard_size >= 1, "shard_size must be >= 1"), (bool(self.seeds), "no [[seeds]]")])

    def domain(self, name: str) -> Domain:
        """A domain's settings (defaults if it has no table)."""
        return self.domains.get(name, Domain())

    def template(self, name: str) -> str:
        """A domain's instruction template."""
        return self.domain(name).template or INSTRUCTION.get(name, INSTRUCTION["general"])

    @classmethod
    def from_toml(cls, path: str | Path) -> "SynthConfig":
        """Read and validate a config; relative seed paths are relative to the working directory."""
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"{path}: {e}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> "SynthConfig":
        """A config from its TOML tables; an unknown key is a one-line error."""
        raw = dict(raw)
        out = {"seeds": [_make(SeedSource, s, "seeds") for s in raw.pop("seeds", [])],
               "backends": {k: _make(BackendConfig, v, f"backends.{k}") for k, v in raw.pop("backends", {}).items()},
               "domains": {k: _make(Domain, v, f"domains.{k}") for k, v in raw.pop("domains", {}).items()}}
        for name, kind in (("generate", Generate), ("evolve", Evolve), ("respond", Respond), ("filter", Filter)):
            out[name] = _make(kind, raw.pop(name, {}), name)
        run = raw.pop("run", {})
        check(not raw, f"unknown tables {sorted(raw)}; known: run, seeds, backends, domains, generate, evolve, "
              "respond, filter")
        return _make(cls, {**run, **out}, "run")


def _make(kind: type, table: dict, where: str):
    """kind(**table), with unknown or missing keys reported as one line."""
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(table) - known)
    check(not unknown, f"[{where}]: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return kind(**table)
    except TypeError as e:
        raise UserError(f"[{where}]: {e}") from None
