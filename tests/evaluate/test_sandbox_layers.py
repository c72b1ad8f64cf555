"""Sandbox layers: detection, the required minimum, what the report records, Landlock's ABI
handling — and the sandbox where bubblewrap cannot work (a SageMaker container)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from codetune.errors import CodetuneError
from codetune.evaluate import sandbox as sb
from codetune.evaluate import sandbox_wrapper as sw
from codetune.evaluate.sandbox import Limits, Sandbox, SandboxUnavailable, detect_layers

CHECK_OK = "def f(x):\n    return x + 1\n\nassert f(1) == 2\n"


@pytest.fixture
def no_bwrap(monkeypatch, tmp_path):
    """bubblewrap absent from PATH (as in the evaluate image under Docker's seccomp)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("setpriv", "kill"):  # what the sandbox needs besides bwrap
        os.symlink(f"/usr/bin/{tool}", bindir / tool)
    monkeypatch.setenv("PATH", str(bindir))
    detect_layers.cache_clear()
    yield
    detect_layers.cache_clear()


def test_without_bwrap_the_unprivileged_layers_run(no_bwrap):
    # Guards defect 3's fix: with bubblewrap unavailable the default minimum (seccomp) is met
    # by the layers a process installs on itself, and the report says which ones ran.
    d = detect_layers()
    assert d.reasons["bwrap"] == "bwrap is not on PATH"
    box = Sandbox(Limits(timeout_s=3))
    assert box.run(CHECK_OK).status == "pass"
    desc = box.describe()
    assert desc["layers"][:1] == ["seccomp"] and "bwrap" not in desc["layers"]
    assert desc["required"] == ["seccomp"]
    if d.available("landlock"):
        assert "landlock" in desc["layers"] and desc["landlock_abi"] == d.landlock_abi


def test_missing_required_layer_names_it_and_how_to_get_it(no_bwrap):
    # Guards: a minimum the machine cannot meet fails with the layer, the reason and the fix.
    with pytest.raises(SandboxUnavailable) as e:
        Sandbox(require="bwrap,seccomp")
    msg = str(e.value)
    assert "bwrap: bwrap is not on PATH" in msg and "apt-get install bubblewrap" in msg
    assert "--allow-unsandboxed" in msg


def test_switched_off_layer_counts_as_missing():
    with pytest.raises(SandboxUnavailable, match="seccomp: switched off"):
        Sandbox(layers=("landlock",), require="seccomp")


def test_require_comes_from_env_and_unknown_names_fail(monkeypatch):
    monkeypatch.setenv(sb.REQUIRE_ENV, "seccomp, landlock")
    assert sb.required_layers() == ("seccomp", "landlock")
    assert sb.required_layers("bwrap") == ("bwrap",)  # the flag wins over the variable
    monkeypatch.setenv(sb.REQUIRE_ENV, "seccomp,gvisor")
    with pytest.raises(CodetuneError, match=f"{sb.REQUIRE_ENV}: unknown sandbox layer"):
        sb.required_layers()
    monkeypatch.delenv(sb.REQUIRE_ENV)
    assert sb.required_layers() == sb.DEFAULT_REQUIRE == ("seccomp",)
    with pytest.raises(CodetuneError, match="names no layer"):
        sb.required_layers(",")


def test_allow_unsandboxed_drops_the_minimum_but_keeps_working_layers(no_bwrap):
    box = Sandbox(require=None, allow_unsandboxed=True)
    assert box.required == () and "seccomp" in box.layers


@pytest.mark.parametrize("via", ["flag", "env"])
def test_cli_missing_layer_fails_before_the_model_loads(
    via, no_bwrap, tmp_path, capsys, monkeypatch, random_adapter_stub
):
    # Guards: the step fails before any generation work when the minimum is not met, set by
    # the flag or by the variable the state machine gives a Processing job.
    import codetune.generation

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the sandbox check")

    monkeypatch.setattr(codetune.generation, "load_model", boom)
    from codetune.cli import main

    out = tmp_path / "o"
    args = ["evaluate", "--adapter", str(random_adapter_stub), "--out", str(out)]
    if via == "flag":
        args += ["--sandbox-require", "bwrap"]
    else:
        from codetune import jobenv

        monkeypatch.setenv(jobenv.SANDBOX_REQUIRE, "bwrap")
    rc = main([*args, "--suites", "humaneval", "--limit", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "required sandbox layer(s) bwrap" in err and "bwrap is not on PATH" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sandbox-require", "seccomp,gvisor"], "unknown sandbox layer(s) gvisor"),
        (["--allow-unsandboxed", "--sandbox-require", "seccomp"], "contradicts"),
    ],
)
def test_cli_bad_sandbox_flags(tmp_path, capsys, random_adapter_stub, args, message):
    from codetune.cli import main

    base = ["evaluate", "--adapter", str(random_adapter_stub), "--out", str(tmp_path / "o")]
    assert main([*base, "--suites", "humaneval", *args]) == 2
    assert message in capsys.readouterr().err


def test_score_summary_records_layers(tmp_path):
    # Guards the record: summary.json (like report.json) lists the layers that ran.
    from codetune.evaluate.runner import score_completions

    comps = tmp_path / "c.jsonl"
    comps.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"}))
    summary = score_completions("humaneval", comps, tmp_path / "o", timeout_s=3)
    assert "seccomp" in summary["sandbox"]["layers"]
    assert summary["sandbox"]["required"] == ["seccomp"]


def test_report_schema_accepts_layers_and_rejects_unknown():
    from jsonschema import Draft202012Validator

    from codetune.evaluate.report import schema_path

    schema = json.loads(schema_path().read_text())
    settings = schema["properties"]["settings"]["properties"]["sandbox"]
    v = Draft202012Validator(settings)
    assert v.is_valid(Sandbox().describe())
    assert v.is_valid(None)
    assert not v.is_valid({"layers": ["gvisor"], "required": []})
    assert not v.is_valid("bwrap-root")  # the old free-form string is no longer a record


# ------------------------------------------------------------------------------ Landlock


def _in_child(code: str, deny: dict[str, int] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, optionally under a seccomp filter that fails
    the named system calls with the given errno (what a container's profile might do)."""
    prelude = ""
    if deny:
        prelude = textwrap.dedent(
            f"""
            import pyseccomp as s
            f = s.SyscallFilter(s.ALLOW)
            for name, err in {deny!r}.items():
                f.add_rule(s.ERRNO(err), name)
            f.load()
            """
        )
    src = f"import sys\nsys.path.insert(0, {os.path.dirname(sw.__file__)!r})\n" + prelude + code
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("errno_name", "reason"),
    [
        ("ENOSYS", "kernel has no Landlock"),
        ("EOPNOTSUPP", "disabled at boot"),
        ("EPERM", "seccomp filter"),
    ],
)
def test_landlock_probe_reports_why_it_is_missing(errno_name, reason):
    # Guards honest detection where Landlock is missing: each way the kernel says no (an
    # old kernel, Landlock off at boot, a container profile blocking it) gives its reason.
    import errno

    r = _in_child(
        "import sandbox_wrapper as w\nprint(repr(w.landlock_abi()))\n",
        deny={"landlock_create_ruleset": getattr(errno, errno_name)},
    )
    assert r.returncode == 0, r.stderr
    abi, why = eval(r.stdout)
    assert abi == 0 and reason in why


def test_sandbox_reports_landlock_unavailable_and_refuses_when_required():
    # Guards: with the Landlock calls blocked, detection says so and require=landlock fails.
    r = _in_child(
        "from codetune.evaluate.sandbox import Sandbox, SandboxUnavailable, detect_layers\n"
        "d = detect_layers()\n"
        "assert not d.available('landlock'), d\n"
        "assert 'landlock' not in Sandbox(require='seccomp').layers\n"
        "try:\n    Sandbox(require='landlock')\n"
        "except SandboxUnavailable as e:\n    print(e)\n",
        deny={"landlock_create_ruleset": 1},
    )
    assert r.returncode == 0, r.stderr
    assert "landlock: a seccomp filter around this process blocks" in r.stdout


ABIS = range(1, max(detect_layers().landlock_abi, 1) + 1)


@pytest.mark.parametrize("abi", ABIS)
def test_landlock_confines_writes_at_every_abi_version(abi, tmp_path):
    # Guards ABI awareness: the ruleset built for each older ABI is accepted by this kernel
    # and still confines writes to the working directory.
    if not detect_layers().available("landlock"):
        pytest.skip(f"Landlock unavailable here: {detect_layers().reasons['landlock']}")
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside"
    r = _in_child(
        f"import os, sandbox_wrapper as w\nos.chdir({str(work)!r})\n"
        f"w.landlock_confine(os.getcwd(), {abi})\n"
        "open('inside', 'w').write('x')\n"
        "open('/dev/null', 'w').write('x')\n"
        f"try:\n    open({str(outside)!r}, 'w')\n"
        "except PermissionError:\n    print('denied')\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "denied" and (work / "inside").exists() and not outside.exists()


def test_write_rights_grow_with_the_abi():
    assert not sw.write_rights(1) & (sw.FS_REFER | sw.FS_TRUNCATE | sw.FS_IOCTL_DEV)
    assert sw.write_rights(2) & sw.FS_REFER and not sw.write_rights(2) & sw.FS_TRUNCATE
    assert sw.write_rights(3) & sw.FS_TRUNCATE and not sw.write_rights(4) & sw.FS_IOCTL_DEV
    assert sw.write_rights(5) & sw.FS_IOCTL_DEV


def test_landlock_failure_inside_is_loud():
    # Guards: when the kernel refuses to apply the ruleset (here a filter fails
    # landlock_restrict_self) the run stops before untrusted code, as a harness error, not
    # as the program's failure.
    if not detect_layers().available("landlock"):
        pytest.skip(f"Landlock unavailable here: {detect_layers().reasons['landlock']}")
    r = _in_child(
        "from codetune.errors import CodetuneError\n"
        "from codetune.evaluate.sandbox import Limits, Sandbox\n"
        "box = Sandbox(Limits(timeout_s=3), layers=('seccomp', 'landlock'), require='landlock')\n"
        'try:\n    box.run(\'open("x", "w")\\n\')\n'
        "except CodetuneError as e:\n    print(e)\n",
        deny={"landlock_restrict_self": 1},
    )
    assert r.returncode == 0, r.stderr
    assert "the sandbox failed to start" in r.stdout and "Landlock (ABI" in r.stdout, r.stdout
