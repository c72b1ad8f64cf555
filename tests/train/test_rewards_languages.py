"""The verifiable rewards and the bugfix scorer on languages other than Python."""

from __future__ import annotations

import pytest

from codetune.evaluate.suites import score_bugfix_answer
from codetune.train.rewards import exact_fix, format, normalized_tree, parses, score_all

JAVA_REF = "int f(int a) {\n    return a + 1;\n}\n"
GO_REF = "func f(a int) int {\n\treturn a + 1\n}\n"


def test_exact_fix_ignores_layout_and_comments_per_language() -> None:
    # Guards exact_fix on tree-sitter trees: a reformatted, commented answer is the fix; a
    # changed token is not; the language column decides how each completion is parsed.
    done = ["```java\n// fixed\nint f(int a) { return a+1; }\n```"]
    assert exact_fix(done, [JAVA_REF], language=["java"]) == [1.0]
    assert exact_fix(["```java\nint f(int a) { return a - 1; }\n```"], [JAVA_REF], ["java"]) == [
        0.0
    ]
    go = ["```go\nfunc f(a int) int { return a + 1 } // done\n```"]
    assert exact_fix(go, [GO_REF], language=["go"]) == [1.0]
    # without a language column completions are Python (the rewards as they were)
    assert exact_fix(done, [JAVA_REF]) == [0.0]


def test_parses_and_format_per_language() -> None:
    # Guards parses (an error node anywhere fails) and format (the fence names the language).
    ok = "```java\nint f(int a) { return a + 1; }\n```"
    broken = "```java\nint f(int a) { return a + 1 }\n```"
    assert parses([ok, broken], [JAVA_REF] * 2, language=["java", "java"]) == [1.0, 0.0]
    assert format([ok], [JAVA_REF], language=["java"]) == [1.0]
    assert format(["```python\nint f() { return 1; }\n```"], [JAVA_REF], ["java"]) == [0.0]
    assert format(["```ts\nfunction f() {}\n```"], ["x"], ["typescript"]) == [1.0]
    scores = score_all([ok], [JAVA_REF], ["java"])
    assert scores["exact_fix"] == [1.0] and scores["length_penalty"] == [0.0]
    with pytest.raises(ValueError, match="2 languages for 1 references"):
        parses([ok], [JAVA_REF], language=["java", "java"])


def test_score_bugfix_answer_per_language() -> None:
    # Guards the evaluation scorer: the same rule as the reward, per record language.
    assert score_bugfix_answer("int f(int a) {return a+1;}", JAVA_REF, "java") == {
        "exact_fix": True,
        "parses": True,
    }
    assert score_bugfix_answer("int f(int a) { return a + 1 }", JAVA_REF, "java") == {
        "exact_fix": False,
        "parses": False,
    }
    assert not score_bugfix_answer("def f(a):\n    return a + 1\n", JAVA_REF, "java")["parses"]
    assert normalized_tree("def f(a):\n    '''doc'''\n    return a", None) == normalized_tree(
        "def f(a):\n    return a", "python"
    )
    with pytest.raises(ValueError, match="unknown language 'cobol'"):
        normalized_tree("x", "cobol")
