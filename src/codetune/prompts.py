"""The ONE place task prompts are rendered. Prepare, train, evaluate and serve all use it.

If a prompt changed between training and evaluation, evaluation would measure a different
task than the one trained; keeping rendering here makes that impossible.

Tasks:
- ``bugfix``: a function with one injected bug → the corrected function.
- ``complete``: a function's signature and docstring → the whole function.

Answers are one fenced Python code block; :func:`extract_code` reads it back.
No system turn is added: the model's chat template supplies its own default, identically in
training, evaluation and serving.
"""

from __future__ import annotations

import re

TASKS = ("bugfix", "complete")
FENCE = "```"

_BUGFIX = (
    "The following Python function{where} contains exactly one bug. "
    "Reply with the corrected function only, in a single ```python code block.\n\n"
    "```python\n{code}\n```"
)
_COMPLETE = (
    "Complete the following Python function{where}: write its full body. "
    "Reply with the whole function only, in a single ```python code block.\n\n"
    "```python\n{code}\n```"
)


def _where(path: str | None) -> str:
    return f" from `{path}`" if path else ""


def bugfix_user(buggy_code: str, path: str | None = None) -> str:
    """User turn of a bugfix example."""
    return _BUGFIX.format(where=_where(path), code=buggy_code.rstrip("\n"))


def complete_user(stub_code: str, path: str | None = None) -> str:
    """User turn of a completion example (``stub_code`` = decorators + signature + docstring)."""
    return _COMPLETE.format(where=_where(path), code=stub_code.rstrip("\n"))


def code_answer(code: str) -> str:
    """Assistant turn: the code in one fenced block."""
    return f"{FENCE}python\n{code.rstrip()}\n{FENCE}"


def user_prompt(task: str, code: str, path: str | None = None) -> str:
    """Render the user turn of ``task``; raises ``ValueError`` for an unknown task."""
    if task == "bugfix":
        return bugfix_user(code, path)
    if task == "complete":
        return complete_user(code, path)
    raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def messages(
    task: str, code: str, answer: str | None = None, path: str | None = None
) -> list[dict]:
    """Conversational record (TRL format): user turn, plus the assistant turn when ``answer``."""
    msgs = [{"role": "user", "content": user_prompt(task, code, path)}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": code_answer(answer)})
    return msgs


_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:\n```|\Z)", re.S)


def extract_code(answer: str) -> str:
    """The code of the first fenced block in ``answer`` (an unterminated block counts up to
    the end), or the whole answer stripped when it has no fence."""
    m = _BLOCK.search(answer)
    if m:
        return m.group(1).rstrip()
    return answer.strip()


def count_blocks(answer: str) -> int:
    """Number of fenced code blocks (for answer-format checks)."""
    return answer.count(FENCE) // 2


def render_chat(tokenizer, msgs: list[dict], add_generation_prompt: bool = True) -> str:
    """Render ``msgs`` with the tokenizer's chat template (the same call everywhere)."""
    return tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=add_generation_prompt
    )
