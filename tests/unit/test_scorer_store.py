"""The scorer store's pure parts: upload validation, the catalog, the registry's resolution order,
the sandbox environment, and the ClickHouse rows of uploads. No broker, no subprocess."""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline import topics
from pipeline.contracts import encode
from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import ScorerNotFoundError
from pipeline.scoring.sandbox.environment import install_env, parse_allow_list, scorer_env
from pipeline.scoring.sandbox.isolation import Isolation, host_view, outermost
from pipeline.scoring.store import ScorerCatalog, latest_per_name
from pipeline.scoring.uploaded import UploadedScorers, catalog_of
from pipeline.scoring.uploads import UploadError, build_upload, find_scorers, parse_requirements
from pipeline.settings import Settings
from pipeline.storage import rows
from pipeline.storage.sink import rows_for
from scorers import registry
from scorers.builtin import TraceLatency

CLASS_SCORER = '''
from scorers import Score, Scorer

class Relevance(Scorer):
    name = "relevance"

    def score(self, target):
        return Score(value=1.0)
'''

FUNCTION_SCORER = '''
import scorers

@scorers.scorer("polite", threshold=0.5)
def politeness(target):
    return 1.0
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def record(name: str = "relevance", source: str = CLASS_SCORER, entry: str = "Relevance",
           requirements: list[str] | None = None, at: int = 1) -> UploadedScorer:
    reqs = requirements or []
    return UploadedScorer(name=name, version=UploadedScorer.content_version(source, entry, reqs), entry=entry,
                          kind="class", filename="m.py", source=source, requirements=reqs, uploaded_at_ns=at)


# -- finding the scorer in a module -----------------------------------------------------------------

def test_finds_a_scorer_class_and_its_declared_name() -> None:
    [found] = find_scorers(CLASS_SCORER, "m.py")
    assert (found.attribute, found.kind, found.declared_name) == ("Relevance", "class", "relevance")


def test_finds_a_decorated_function_through_a_module_alias() -> None:
    [found] = find_scorers(FUNCTION_SCORER, "m.py")
    assert (found.attribute, found.kind, found.declared_name) == ("politeness", "function", "polite")


def test_finds_aliased_imports_and_subclasses_of_local_bases() -> None:
    source = '''
from scorers.base import Scorer as Base, scorer as make

class Common(Base):
    pass

class Strict(Common):
    name: str = "strict"

@make(name="loose")
async def loose(target):
    return True

def helper():
    pass

class NotAScorer(dict):
    pass
'''
    found = {c.attribute: c for c in find_scorers(source, "m.py")}
    assert set(found) == {"Common", "Strict", "loose"}
    assert found["Common"].subclassed and not found["Strict"].subclassed
    assert found["Strict"].declared_name == "strict" and found["loose"].declared_name == "loose"


def test_a_syntax_error_names_the_file_and_line() -> None:
    with pytest.raises(UploadError, match=r"m\.py line 3: .*valid Python"):
        find_scorers("import os\n\ndef broken(:\n", "m.py")


# -- requirements -------------------------------------------------------------------------------------

def test_requirements_are_normalized_sorted_and_deduplicated() -> None:
    text = "# judges\nOpenAI >= 1.40  # the client\n\npackaging\nrequests[socks]==2.32.0 ; python_version >= '3.8'\n" \
           "packaging\n"
    assert parse_requirements(text, "r.txt") == [
        "OpenAI>=1.40", "packaging", 'requests[socks]==2.32.0; python_version >= "3.8"']


@pytest.mark.parametrize("line, fragment", [
    ("-r other.txt", r"r\.txt line 2: pip options \(-r\) are not supported"),
    ("--index-url https://x", r"pip options \(--index-url\)"),
    ("openai >>= 1", r"r\.txt line 2: 'openai >>= 1' is not a valid requirement"),
])
def test_bad_requirement_lines_are_rejected_with_their_line(line: str, fragment: str) -> None:
    with pytest.raises(UploadError, match=fragment):
        parse_requirements(f"packaging\n{line}\n", "r.txt")


# -- building an upload --------------------------------------------------------------------------------

def test_upload_takes_the_declared_name_and_a_content_version(tmp_path: Path) -> None:
    module = write(tmp_path, "my_scorer.py", CLASS_SCORER)
    reqs = write(tmp_path, "requirements.txt", "packaging>=20\n")
    up = build_upload(module, reqs)
    assert (up.name, up.entry, up.kind, up.filename) == ("relevance", "Relevance", "class", "my_scorer.py")
    assert up.requirements == ["packaging>=20"] and up.source == CLASS_SCORER and up.uploaded_by
    assert up.label == f"relevance@{up.version}" and re.fullmatch(r"[0-9a-f]{12}", up.version)
    # The version is the content: same files, same version; other requirements, another version.
    assert build_upload(module, reqs).version == up.version
    assert build_upload(module).version != up.version
    assert build_upload(module, reqs, name="other").version == up.version


def test_an_upload_declares_the_network_it_needs_and_that_is_part_of_its_version(tmp_path: Path) -> None:
    module = write(tmp_path, "my_scorer.py", CLASS_SCORER)
    offline, online = build_upload(module), build_upload(module, network=True)
    assert (offline.network, online.network) == (False, True) and online.version != offline.version
    # Versions without network are what they were before the field existed, and old records read as offline.
    assert offline.version == UploadedScorer.content_version(CLASS_SCORER, "Relevance", [])
    old = orjson.loads(encode(offline))
    del old["network"]
    assert UploadedScorer.model_validate(old).network is False


def test_upload_name_falls_back_to_the_file_name_and_can_be_given(tmp_path: Path) -> None:
    module = write(tmp_path, "tone_check.py", CLASS_SCORER.replace('name = "relevance"', "threshold = 0.5"))
    assert build_upload(module).name == "tone_check"
    assert build_upload(module, name="tone.v2").name == "tone.v2"
    spaced = write(tmp_path, "spaced.py", CLASS_SCORER.replace('"relevance"', '"Package Inquiry Scorer"'))
    assert build_upload(spaced).name == "spaced"  # not a usable name: the file's instead


def test_several_scorers_need_an_entry(tmp_path: Path) -> None:
    module = write(tmp_path, "both.py", CLASS_SCORER + FUNCTION_SCORER)
    with pytest.raises(UploadError, match=r"several scorers \(Relevance, politeness\); choose one with --entry"):
        build_upload(module)
    assert build_upload(module, entry="politeness").name == "polite"
    with pytest.raises(UploadError, match=r"--entry Nope: both\.py has no .* named 'Nope' \(found: Relevance, "):
        build_upload(module, entry="Nope")


@pytest.mark.parametrize("filename, text, kwargs, fragment", [
    ("empty.py", "import os\n", {}, r"empty\.py defines no scorer"),
    ("m.txt", CLASS_SCORER, {}, r"upload a Python module"),
    ("m.py", CLASS_SCORER, {"name": "has space"}, r"scorer name 'has space' is not valid"),
    ("m.py", CLASS_SCORER, {"name": "pkg.mod:Thing"}, r"is not valid"),
    ("m.py", CLASS_SCORER, {"name": "trace_latency"}, r"'trace_latency' is taken by a built-in scorer"),
])
def test_invalid_uploads_are_rejected(tmp_path: Path, filename: str, text: str, kwargs: dict[str, Any],
                                      fragment: str) -> None:
    with pytest.raises(UploadError, match=fragment):
        build_upload(write(tmp_path, filename, text), **kwargs)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="scorer module .*nope.py does not exist"):
        build_upload(tmp_path / "nope.py")
    with pytest.raises(UploadError, match="requirements file .*reqs.txt does not exist"):
        build_upload(write(tmp_path, "m.py", CLASS_SCORER), tmp_path / "reqs.txt")


# -- the catalog -------------------------------------------------------------------------------------

def test_catalog_keeps_the_last_version_per_name() -> None:
    catalog = ScorerCatalog()
    v1, v2 = record(source=CLASS_SCORER), record(source=CLASS_SCORER + "\n# v2\n")
    assert catalog.apply(b"relevance", encode(v1)) == v1
    assert catalog.apply(b"relevance", encode(v2)) == v2
    assert catalog.apply(b"relevance", encode(v2)) is None  # the same version again: nothing changed
    assert catalog.get("relevance") == v2 and "relevance" in catalog
    assert catalog.apply(b"relevance", encode(v1)) == v1  # an older upload again is a rollback
    assert catalog.get("relevance").version == v1.version


def test_catalog_skips_bad_records_and_removes_on_tombstones() -> None:
    catalog = ScorerCatalog()
    catalog.put(record())
    assert catalog.apply(b"relevance", b"not json") is None
    assert catalog.get("relevance") is not None
    assert catalog.apply(b"relevance", None) is None
    assert catalog.get("relevance") is None and catalog.records() == []


def test_latest_per_name_in_upload_order() -> None:
    a1, b1, a2 = record("a", at=1), record("b", at=2), record("a", source=CLASS_SCORER + "#", at=3)
    assert [r.version for r in latest_per_name([a1, b1, a2])] == [a2.version, b1.version]


# -- the registry ------------------------------------------------------------------------------------

def test_resolution_order_builtin_entry_point_dotted_uploaded() -> None:
    eps = {"from_ep": EntryPoint("from_ep", "scorers.builtin:ErrorSpans", registry.ENTRY_POINT_GROUP),
           "broken_ep": EntryPoint("broken_ep", "no_such_pkg_xyz:Thing", registry.ENTRY_POINT_GROUP),
           "trace_latency": EntryPoint("trace_latency", "scorers.builtin:ErrorSpans", registry.ENTRY_POINT_GROUP)}
    uploads = UploadedScorers(catalog_of([record("from_upload")]), Settings(), accept_unknown=False)
    scorers = registry.ScorerResolver(uploaded=uploads, entry_points=eps)

    assert scorers.resolve("trace_latency") is TraceLatency  # a built-in beats an entry point
    assert scorers.resolve("from_ep").name == "error_spans"
    assert scorers.resolve("scorers.builtin:TraceLatency") is TraceLatency
    uploaded = scorers.resolve("from_upload")
    assert uploaded.name == "from_upload" and scorers.resolve("from_upload") is uploaded
    with pytest.raises(ScorerNotFoundError, match="entry point 'no_such_pkg_xyz:Thing' .* cannot be loaded"):
        scorers.resolve("broken_ep")
    with pytest.raises(ScorerNotFoundError, match=r"unknown scorer 'nope'.*\(broken_ep, from_ep, trace_latency\).*upload"):
        scorers.resolve("nope")
    assert scorers.reserved_names() >= {"from_ep", "trace_latency", "error_spans"}
    with pytest.raises(ScorerNotFoundError, match="unknown scorer 'from_upload'"):
        registry.ScorerResolver(entry_points=eps).resolve("from_upload")  # another resolver: no uploads


def test_workers_accept_a_name_before_its_first_version() -> None:
    strict = registry.ScorerResolver(uploaded=UploadedScorers(ScorerCatalog(), Settings(), accept_unknown=False))
    with pytest.raises(ScorerNotFoundError, match="unknown scorer 'later'"):
        strict.build("later", {})
    worker = registry.ScorerResolver(uploaded=UploadedScorers(ScorerCatalog(), Settings(), accept_unknown=True))
    scorer = worker.build("later", {"word": "x"})
    assert scorer.name == "later" and scorer.version == "?"
    with pytest.raises(TypeError, match="params of uploaded scorer 'later' must be JSON"):
        worker.build("later", {"bad": object()})
    with pytest.raises(ScorerNotFoundError):
        worker.build("not a name", {})  # never a sandbox for something that cannot be uploaded


async def test_a_name_without_a_version_is_an_error_that_says_so() -> None:
    catalog = ScorerCatalog()
    catalog.ready.set()
    uploads = UploadedScorers(catalog, Settings(), accept_unknown=True)
    with pytest.raises(ScorerNotFoundError, match=r"unknown scorer 'later'.*no uploaded version has arrived.*"
                                                  r"evalstream scorers upload FILE \[REQUIREMENTS\] --name later"):
        await uploads.current("later")
    catalog.put(record("later"))
    assert (await uploads.current("later")).name == "later"


# -- the sandbox environment ---------------------------------------------------------------------------

PARENT_ENV = {"PATH": "/opt/bin:/usr/bin", "HOME": "/root", "LANG": "en_US.UTF-8", "EVALSTREAM_SLACK_BOT_TOKEN": "x",
              "OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak", "AWS_SECRET_ACCESS_KEY": "s", "PIP_INDEX_URL": "i",
              "HTTPS_PROXY": "p"}


def test_scorer_env_has_basics_and_only_allowed_variables(tmp_path: Path) -> None:
    env = scorer_env(PARENT_ENV, parse_allow_list("OPENAI_API_KEY, ANTHROPIC_*"), venv_bin=tmp_path / "bin",
                     home=tmp_path / "home")
    assert env["PATH"] == f"{tmp_path / 'bin'}:/opt/bin:/usr/bin"
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path / "home") and env["LANG"] == "en_US.UTF-8"
    assert env["OPENAI_API_KEY"] == "sk" and env["ANTHROPIC_API_KEY"] == "ak"
    for secret in ("EVALSTREAM_SLACK_BOT_TOKEN", "AWS_SECRET_ACCESS_KEY", "PIP_INDEX_URL", "HTTPS_PROXY"):
        assert secret not in env
    assert "OPENAI_API_KEY" not in scorer_env(PARENT_ENV, (), venv_bin=tmp_path, home=tmp_path)


def test_install_env_adds_pip_configuration_but_no_secrets(tmp_path: Path) -> None:
    env = install_env(PARENT_ENV, (), venv_bin=tmp_path / "bin")
    assert env["PIP_INDEX_URL"] == "i" and env["HTTPS_PROXY"] == "p" and env["HOME"] == "/root"
    assert not {"EVALSTREAM_SLACK_BOT_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"} & set(env)


def test_the_sandbox_view_is_the_outermost_real_paths_of_the_system_and_the_workers_python() -> None:
    assert outermost(["/usr/lib", "/usr", "/opt/a/b", "/opt/a", "/opt/ab"]) == ["/opt/a", "/opt/ab", "/usr"]
    view, links = host_view({"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "OPENAI_API_KEY": "/usr/x"})
    assert "/etc" in view and all(not Path(p).is_symlink() for p in view) and view == outermost(view)
    assert all(Path(p).is_symlink() for p in links)  # e.g. /bin -> usr/bin on merged-/usr systems
    import pipeline
    assert any(str(Path(pipeline.__file__).resolve()).startswith(p + "/") for p in view)


def test_the_launcher_asks_for_what_the_isolation_has(tmp_path: Path) -> None:
    import json

    full = Isolation(uid=999, gid=995, network_ns=True, mount_ns=True, view=("/usr",), links={"/bin": "usr/bin"})
    argv = full.launcher(network=False, ro=[tmp_path / "venv"], rw=[tmp_path / "run"], cwd=tmp_path / "run")
    assert argv[1:3] == ("-I", "-S") and argv[3].endswith("confine.py") and argv[-1] == "--"
    spec = json.loads(argv[4])
    assert spec["user"] == [999, 995] and spec["network"] is False and spec["mount"] is True
    assert spec["ro"] == sorted(["/usr", str((tmp_path / "venv").resolve())])
    assert spec["rw"] == [str((tmp_path / "run").resolve())]
    assert json.loads(full.launcher(network=True)[4])["network"] is True  # declared: the worker's network
    # Where the kernel refused a namespace, the launcher does not ask for it (the warning said so at start-up).
    bare = json.loads(Isolation(problems=("no namespaces",)).launcher(network=False)[4])
    assert (bare["user"], bare["network"], bare["mount"]) == (None, True, False)


# -- storage -------------------------------------------------------------------------------------------

def test_scorer_version_columns_match_the_migration() -> None:
    ddl = (Path(rows.__file__).parent / "migrations" / "002_scorer_versions.sql").read_text()
    body = re.search(r"scorer_versions \((.*?)\n\) ENGINE", ddl, re.DOTALL).group(1)
    names = [line.strip().split()[0] for line in body.strip().splitlines()]
    assert rows.SCORER_VERSION_COLUMNS == [n for n in names if n != "ingested_at"]


def test_the_sink_stores_every_upload_and_ignores_tombstones() -> None:
    up = record(requirements=["packaging>=20"], at=1_700_000_000_123_456_789)
    [row] = rows_for(topics.SCORERS, encode(up), 1 << 20)["scorer_versions"]
    stored = dict(zip(rows.SCORER_VERSION_COLUMNS, row, strict=True))
    assert stored["name"] == "relevance" and stored["version"] == up.version
    assert stored["requirements"] == ["packaging>=20"] and stored["source"] == CLASS_SCORER
    assert stored["uploaded_at"] == 1_700_000_000_123_456
    assert rows_for(topics.SCORERS, None, 1 << 20) == {"scorer_versions": []}
    assert topics.SCORERS in topics.SINK_TOPICS and topics.SCORERS in topics.ALL
    assert topics.CONFIGS[topics.SCORERS] == {"cleanup.policy": "compact"}
    assert orjson.loads(encode(up))["name"] == "relevance"
