"""The four steps as shard functions: generate, evolve, respond, filter (+ global dedup).

Every model call appends a provenance entry to its record: step, backend, model, prompt,
sampling parameters and output. Choices (style, complexity, evolution method, sampling seeds)
come from a generator seeded by the run seed and the record id, so a rerun makes the same requests.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from dataclasses import dataclass

from .backends import Backend, Request
from .config import SynthConfig
from .minhash import MinHashIndex
from .parsing import EXTRACTORS, LEAK_WORDS_RE, is_refusal, majority, normalize, parse_rating
from .prompts import CRITIQUE, evolve_prompt


@dataclass
class Steps:
    """The config and its backends, with a shard function per step."""

    cfg: SynthConfig
    backends: dict[str, Backend]

    def _rng(self, record_id: str, salt: str) -> random.Random:
        return random.Random(zlib.crc32(f"{self.cfg.seed}/{salt}/{record_id}".encode()))

    def _call(self, step: str, backend_name: str, records: list[dict], requests: list[Request]) -> list[str | None]:
        """Run requests (one per record) on a backend and log each in its record's provenance.

        A refused request (prompt too long) gives None."""
        backend = self.backends[backend_name]
        texts = backend.generate(requests)
        for rec, req, text in zip(records, requests, texts):
            prompt = list(req.messages) if req.messages is not None else req.prompt
            rec.setdefault("provenance", []).append({
                "step": step, "backend": backend_name, "model": self.cfg.backends[backend_name].model,
                "prompt": prompt, "sampling": req.sampling(), "output": text})
        return [None if t is None else t.strip() for t in texts]

    # ----- step 1 ----------------------------------------------------------------------------
    def generate(self, seeds: list[dict]) -> tuple[list[dict], list[dict], Counter]:
        """Instructions from seeds (per-domain templates, style and complexity) and from template prefixes."""
        g = self.cfg.generate
        recs, reqs = [], []
        verbatim = [{**seed, "id": f"{seed['id']}-0", "instruction": seed["seed"]["text"]}
                    for seed in seeds if seed["seed"].get("verbatim")]
        for seed in seeds:
            for k in range(0 if seed["seed"].get("verbatim") else g.per_seed):
                rec = {**seed, "id": f"{seed['id']}-{k}"}
                rng = self._rng(rec["id"], "generate")
                rec["style"], rec["complexity"] = rng.choice(g.styles), rng.choice(g.complexity)
                prompt = self.cfg.template(seed["domain"]).format(
                    seed=seed["seed"]["text"], style=rec["style"], complexity=rec["complexity"], domain=seed["domain"])
                recs.append(rec)
                reqs.append(Request(messages=({"role": "user", "content": prompt},), max_tokens=g.max_tokens,
                                    temperature=g.temperature, top_p=g.top_p, seed=rng.randrange(2**31)))
        if g.prefix_per_shard and seeds:
            ids, stop = self.backends[g.backend].user_prefix(g.prefix_system)
            for k in range(g.prefix_per_shard):
                rec = {"id": f"{seeds[0]['id']}-prefix{k}", "domain": "general",
                       "seed": {"source": "template-prefix", "text": ""}}
                recs.append(rec)
                reqs.append(Request(prompt=ids, stop=stop, max_tokens=g.max_tokens, temperature=g.temperature,
                                    top_p=g.top_p, seed=self._rng(rec["id"], "prefix").randrange(2**31)))
        texts = self._call("generate", g.backend, recs, reqs)
        kept, dropped = [], []
        for rec, text in zip(recs, texts):
            rec["instruction"] = text
            problem = self._instruction_problem(text, 1, None)
            reason = problem and f"generate_{problem}"
            (dropped if reason else kept).append({**rec, "dropped": reason} if reason else rec)
        return verbatim + kept, dropped, Counter()

    @staticmethod
    def _instruction_problem(text: str | None, min_chars: int, max_chars: int | None,
                             before: str | None = None) -> str | None:
        """Why an instruction is eliminated (None: it is fine)."""
        if text is None:
            return "prompt_refused"
        if before is not None and normalize(text) == normalize(before):
            return "unchanged"
        if LEAK_WORDS_RE.search(text):
            return "leaked_template"
        if is_refusal(text):
            return "refusal"
        if len(text) < min_chars:
            return "too_short"
        if max_chars is not None and len(text) > max_chars:
            return "too_long"
        return None

    # ----- step 2 ----------------------------------------------------------------------------
    def evolve(self, records: list[dict]) -> tuple[list[dict], list[dict], Counter]:
        """k rounds of evolution; a record whose rewrite breaks a rule is dropped with that reason."""
        e = self.cfg.evolve
        verbatim = [rec for rec in records if rec["seed"].get("verbatim")]
        alive, dropped = [rec for rec in records if not rec["seed"].get("verbatim")], []
        for round_ in range(e.rounds):
            reqs = []
            for rec in alive:
                rng = self._rng(rec["id"], f"evolve{round_}")
                method = rng.choice(e.methods)
                rec.setdefault("evolution", []).append(method)
                prompt = evolve_prompt(method, rec["instruction"])
                reqs.append(Request(messages=({"role": "user", "content": prompt},), max_tokens=e.max_tokens,
                                    temperature=e.temperature, top_p=e.top_p, seed=rng.randrange(2**31)))
            texts = self._call("evolve", e.backend, alive, reqs)
            survivors = []
            for rec, text in zip(alive, texts):
                reason = self._instruction_problem(text, e.min_chars, e.max_chars, before=rec["instruction"])
                if reason:
                    dropped.append({**rec, "dropped": f"evolve_{reason}"})
                else:
                    survivors.append({**rec, "instruction": text})
            alive = survivors
        return verbatim + alive, dropped, Counter()

    # ----- step 3 ----------------------------------------------------------------------------
    def respond(self, records: list[dict]) -> tuple[list[dict], list[dict], Counter]:
        """k responses per instruction from the domain's responder backend."""
        r = self.cfg.respond
        by_backend: dict[str, list[tuple[dict, Request]]] = {}
        for rec in records:
            name = self.cfg.domain(rec["domain"]).responder or r.backend
            rng = self._rng(rec["id"], "respond")
            for _ in range(r.samples):
                req = Request(messages=({"role": "user", "content": rec["instruction"]},), max_tokens=r.max_tokens,
                              temperature=r.temperature, top_p=r.top_p, seed=rng.randrange(2**31))
                by_backend.setdefault(name, []).append((rec, req))
        for name, pairs in by_backend.items():
            recs = [rec for rec, _ in pairs]
            texts = self._call("respond", name, recs, [req for _, req in pairs])
            for rec, text in zip(recs, texts):
                rec.setdefault("responses", []).append({"text": text or "", "refused": text is None})
        return records, [], Counter()

    # ----- step 4 ----------------------------------------------------------------------------
    def filter(self, records: list[dict]) -> tuple[list[dict], list[dict], Counter]:
        """Rule filters, self-consistency votes and critique ratings; keeps the best response (and the worst)."""
        f = self.cfg.filter
        events = Counter()
        kept, dropped = [], []
        for rec in records:
            for resp in rec["responses"]:
                text = resp["text"]
                resp["problem"] = ("prompt_refused" if resp["refused"] else "refusal" if is_refusal(text)
                                   else "too_short" if len(text) < f.min_chars
                                   else "too_long" if len(text) > f.max_chars else None)
            extractor = self.cfg.domain(rec["domain"]).extractor
            if extractor and len(rec["responses"]) > 1:
                self._vote(rec, EXTRACTORS[extractor])
        if f.critic:
            self._rate(records, events)
        for rec in records:
            reason = self._choose(rec)
            (dropped if reason else kept).append({**rec, "dropped": reason} if reason else rec)
        return kept, dropped, events

    def _vote(self, rec: dict, extract) -> None:
        """Self-consistency: the majority answer and its vote share; other answers become problems."""
        answers = [extract(r["text"]) for r in rec["responses"]]
        answer, share = majority(answers)
        rec["vote"] = {"answer": answer, "share": share}
        if answer is None:
            return
        for resp, a in zip(rec["responses"], answers):
            resp["answer"] = a
            if a != answer and resp["problem"] is None:
                resp["problem"] = "minority_answer"

    def _rate(self, records: list[dict], events: Counter) -> None:
        """The critic's 1-10 rating of every response; unparsable ones are counted."""
        f = self.cfg.filter
        pairs = [(rec, resp) for rec in records for resp in rec["responses"] if not resp["refused"]]
        reqs = [Request(messages=({"role": "user", "content": CRITIQUE.format(
                    instruction=rec["instruction"], response=resp["text"])},), max_tokens=f.max_tokens,
                    temperature=0.0) for rec, resp in pairs]
        texts = self._call("critique", f.critic, [rec for rec, _ in pairs], reqs)
        for (_, resp), text in zip(pairs, texts):
            resp["rating"] = None if text is None else parse_rating(text)
            if resp["rating"] is None:
                events["unparsable_rating"] += 1
                if f.drop_unparsable and resp["problem"] is None:
                    resp["problem"] = "unparsable_rating"

    def _choose(self, rec: dict) -> str | None:
        """Set `chosen` (best valid response) and `rejected` (worst rated); returns a drop reason or None."""
        f = self.cfg.filter
        vote = rec.get("vote")
        if vote is not None and vote["share"] < f.vote_share:
            return "no_consensus"
        valid = [r for r in rec["responses"] if r["problem"] is None]
        if not valid:
            return Counter(r["problem"] for r in rec["responses"]).most_common(1)[0][0]
        score = lambda r: -1.0 if r.get("rating") is None else r["rating"]  # noqa: E731
        best = max(valid, key=score)
        if f.critic and best.get("rating") is not None and best["rating"] < f.min_rating:
            return "low_rating"
        rec["chosen"] = best["text"]
        rated = [r for r in rec["responses"] if r.get("rating") is not None and r is not best]
        worst = min(rated, key=score, default=None)
        if worst is not None and score(worst) < score(best):
            rec["rejected"] = worst["text"]
        return None

    def dedup(self, records: list[dict]) -> tuple[list[dict], list[dict], Counter]:
        """MinHash near-duplicate removal over instructions, first come first kept (all shards at once)."""
        f = self.cfg.filter
        if f.dedup_threshold >= 1:
            return records, [], Counter()
        index = MinHashIndex(f.dedup_threshold, f.num_perm, seed=self.cfg.seed)
        kept, dropped = [], []
        for rec in records:
            similarity = index.add(rec["instruction"])
            (kept if similarity is None else dropped).append(
                rec if similarity is None else {**rec, "dropped": "near_duplicate", "similarity": similarity})
        return kept, dropped, Counter()
