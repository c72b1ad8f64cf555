"""The ONE place task prompts are rendered. Prepare, train, evaluate and serve all use it.

If a prompt changed between training and evaluation, evaluation would measure a different
task than the one trained; keeping rendering here makes that impossible.

Tasks:
- ``bugfix``: a function with one injected bug → the corrected function.
- ``complete``: a function's signature and docstring → the whole function.

Prompts name the language (:mod:`codetune.languages`; Python when none is given) and ask for
one fenced code block tagged with it (```` ```java ````); :func:`extract_code` reads it back.
No system turn is added: the model's chat template supplies its own default, identically in
training, evaluation and serving.
"""

from __future__ import annotations

import re

from codetune import languages

TASKS = ("bugfix", "complete")
FENCE = "```"

_BUGFIX = (
    "The following {lang} {noun}{where} contains exactly one bug. "
    "Reply with the corrected {noun} only, in a single ```{fence} code block.\n\n"
    "```{fence}\n{code}\n```"
)
_COMPLETE = (
    "Complete the following {lang} {noun}{where}: write its full body. "
    "Reply with the whole {noun} only, in a single ```{fence} code block.\n\n"
    "```{fence}\n{code}\n```"
)


def _where(path: str | None) -> str:
    return f" from `{path}`" if path else ""


def _render(template: str, code: str, path: str | None, language: str | None) -> str:
    lang = languages.get(language)
    return template.format(
        lang=lang.display,
        noun=lang.noun,
        fence=lang.fence,
        where=_where(path),
        code=code.rstrip("\n"),
    )


def bugfix_user(buggy_code: str, path: str | None = None, language: str | None = None) -> str:
    """User turn of a bugfix example (``language``: a :mod:`codetune.languages` name; None:
    Python)."""
    return _render(_BUGFIX, buggy_code, path, language)


def complete_user(stub_code: str, path: str | None = None, language: str | None = None) -> str:
    """User turn of a completion example (``stub_code`` = the function's leading docs and
    signature: decorators + signature + docstring in Python)."""
    return _render(_COMPLETE, stub_code, path, language)


def code_answer(code: str, language: str | None = None) -> str:
    """Assistant turn: the code in one fenced block tagged with its language."""
    return f"{FENCE}{languages.get(language).fence}\n{code.rstrip()}\n{FENCE}"


def answer_prefix(language: str | None = None) -> str:
    """The opening fence an assistant turn starts with (what evaluation pre-fills)."""
    return f"{FENCE}{languages.get(language).fence}\n"


def user_prompt(task: str, code: str, path: str | None = None, language: str | None = None) -> str:
    """Render the user turn of ``task``; raises ``ValueError`` for an unknown task or
    language."""
    if task == "bugfix":
        return bugfix_user(code, path, language)
    if task == "complete":
        return complete_user(code, path, language)
    raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def messages(
    task: str,
    code: str,
    answer: str | None = None,
    path: str | None = None,
    language: str | None = None,
) -> list[dict]:
    """Conversational record (TRL format): user turn, plus the assistant turn when ``answer``."""
    msgs = [{"role": "user", "content": user_prompt(task, code, path, language)}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": code_answer(answer, language)})
    return msgs


# An opening fence with any language tag (```python, ```java, ```c++) or none.
_BLOCK = re.compile(r"```[ \t]*(?:[A-Za-z][\w+#.-]*)?[ \t]*\n(.*?)(?:\n```|\Z)", re.S)


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
