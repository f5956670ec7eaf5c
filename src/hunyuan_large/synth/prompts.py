"""The prompts of every step: per-domain instruction templates, evolution methods, the critique.

Templates are Python format strings; {seed}, {style}, {complexity}, {domain} and {instruction}
are filled in. A domain can replace its instruction template from the config.
"""

from __future__ import annotations

INSTRUCTION = {
    "general": ("Here is a passage:\n\n{seed}\n\nWrite one {complexity} {style} instruction or question that a "
                "user might ask about this passage. Reply with the instruction only."),
    "math": ("Here is some material:\n\n{seed}\n\nWrite one {complexity} {style} math word problem inspired by it "
             "whose answer is a single number. Reply with the problem only."),
    "code": ("Here is some code:\n\n{seed}\n\nWrite one {complexity} {style} programming task that a user might "
             "ask about this code (explain, fix, extend or test it). Reply with the task only."),
}

# Step 2: Evol-Instruct style rewrites. Each names one method; {instruction} is the current one.
EVOLVE = {
    "constraints": "Rewrite the instruction below by adding one more constraint or requirement.",
    "deepen": "Rewrite the instruction below so that it asks about the topic in more depth.",
    "concretise": "Rewrite the instruction below, replacing general concepts with more specific ones.",
    "reasoning": "Rewrite the instruction below so that answering it needs several explicit reasoning steps.",
    "breadth": "Write a new instruction of the same domain as the one below, but about a rarer, less common task.",
    "clarity": "Rewrite the instruction below so that it is clearer and unambiguous, keeping its meaning.",
    "informativeness": "Rewrite the instruction below so that it gives all the context needed to answer it.",
}
EVOLVE_FORMAT = "{method}\n\n#Instruction#\n{instruction}\n\nReply with the rewritten instruction only."
# Words of the evolution prompt that must not appear in an evolved instruction.
LEAK_WORDS = ("#Instruction#", "#Rewritten", "Rewritten Instruction", "rewrite the instruction", "Given Prompt")

CRITIQUE = ("Rate the response to the instruction below for helpfulness, correctness and clarity, on a scale "
            "from 1 (useless) to 10 (excellent).\n\n#Instruction#\n{instruction}\n\n#Response#\n{response}\n\n"
            "Reply in the form 'Rating: N' followed by one sentence of justification.")


def evolve_prompt(method: str, instruction: str) -> str:
    """The step-2 prompt that applies `method` to `instruction`."""
    return EVOLVE_FORMAT.format(method=EVOLVE[method], instruction=instruction)
