"""The mistakes a new user makes (issue 11, trial C4, C5, C7, C12, C13): one or two lines and an exit code, never
a traceback; with ``--json`` the error is JSON on stdout. Each case below printed a traceback (or did the wrong
thing) before."""

from __future__ import annotations

import json
import socket
import sys
import typing
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client, MissingExtra, ServerUnreachable, TuplehubError
from tuplehub.client.cli import app, options
from tuplehub.client.cli.errors import describe
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage.access import PRINCIPAL_PATTERN, RoleName
from tuplehub.storage.artifacts import MEDIA_TYPE
from tuplehub.storage.errors import InvalidRequest, NotFound
from tuplehub.storage.models import NAME_PATTERN, JobKind, JobStatus, Tag, UploadMode

from .conftest import admin_token
from .factories import episode_arrays


class Cli:
    """The ``tuplehub`` command against the test server, as the admin."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.url = server.url
        self.runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(server)})

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> str:
        result = self.runner.invoke(app, [*args, "--url", self.url], input=input)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        assert result.exit_code == code, result.output
        return result.output

    def mistake(self, *args: str, code: int = 1, input: str | None = None) -> str:
        """A command that must fail in one or two lines: ``error: ...`` and maybe ``hint: ...``."""
        output = self(*args, code=code, input=input)
        lines = [line for line in output.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 2, output
        assert lines[0].startswith("error: "), output
        return output


@pytest.fixture
def cli(hub_server: EmbeddedServer) -> Cli:
    return Cli(hub_server)


@pytest.fixture
def dataset(cli: Cli, tmp_path: Path, unique_name: str) -> str:
    """A dataset with one version of four episodes."""
    source = tmp_path / "tuples.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=4, length=10)), source)
    cli("datasets", "create", unique_name)
    cli("upload", unique_name, str(source))
    return unique_name


def test_name_at_version_is_read_alike_by_every_command(cli: Cli, dataset: str, tmp_path: Path) -> None:
    for reference in (f"{dataset}@latest", f"{dataset}@v1", f"{dataset}@1", dataset):
        assert json.loads(cli("export", reference, "-o", str(tmp_path / "x.parquet"), "--json"))["status"] == \
            "succeeded"
    assert "observation float32[3]" in cli("show", f"{dataset}@1")
    assert json.loads(cli("datasets", "show", f"{dataset}@1", "--json"))["name"] == dataset
    assert json.loads(cli("datasets", "episodes", f"{dataset}@v1", "--json"))["total"] == 4
    assert json.loads(cli("metrics", "show", f"{dataset}@1", "--json")) is not None
    assert f"{dataset}@1" in cli("lineage", f"{dataset}@1")
    derived = json.loads(cli("derive", f"{dataset}-copy", "--source", f"{dataset}@1", "--json"))
    assert derived["result"]["episodes"] == 4

    assert "the version after '@' is a number or 'latest'" in cli.mistake("export", f"{dataset}@abc", code=2)
    assert "numbered from 1" in cli.mistake("show", f"{dataset}@0", code=2)
    assert "has no version 7 (latest is 1)" in cli.mistake("show", f"{dataset}@7")
    # `NAME@$V` with V unset read as the latest version, silently
    assert "no version after '@'" in cli.mistake("export", f"{dataset}@", "-o", str(tmp_path / "y.parquet"), code=2)


def test_an_unwritable_output_is_refused_before_the_export_runs(cli: Cli, dataset: str, tmp_path: Path) -> None:
    before = json.loads(cli("jobs", "list", "--kind", "export", "--json"))["total"]
    output = cli.mistake("export", dataset, "-o", str(tmp_path / "nodir" / "x.parquet"), code=2)
    assert "does not exist" in output
    assert "mkdir -p" in output
    assert "is a folder" in cli.mistake("export", dataset, "-o", str(tmp_path), code=2)
    assert json.loads(cli("jobs", "list", "--kind", "export", "--json"))["total"] == before  # no job ran


def test_broken_metadata_files_and_a_wrong_mode(cli: Cli, dataset: str, tmp_path: Path) -> None:
    source = tmp_path / "more.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=2, length=5, first_id=10)), source)
    broken = tmp_path / "broken.json"
    broken.write_text('{"0": {"policy": "random"} "1": {}}')
    assert "is not valid JSON" in cli.mistake("upload", dataset, str(source), "--metadata", str(broken), code=2)
    listed = tmp_path / "list.json"
    listed.write_text('[{"policy": "random"}]')
    assert "holds a JSON list, not a JSON object" in cli.mistake("upload", dataset, str(source), "--metadata",
                                                                 str(listed), code=2)
    output = cli("upload", dataset, str(source), "--mode", "overwrite", code=2)
    assert "'overwrite' is not one of 'append', 'replace'" in output
    assert "Traceback" not in output
    assert json.loads(cli("datasets", "show", dataset, "--json"))["latest_version"] == 1  # nothing was added



def test_metadata_files_with_a_non_object_value_or_binary_bytes(cli: Cli, dataset: str, tmp_path: Path) -> None:
    """Both printed a traceback (TypeError in the client, UnicodeDecodeError reading the file)."""
    source = tmp_path / "more.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=2, length=5, first_id=10)), source)
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"10": 5}')
    assert "episode '10' maps to a number, not to a JSON object" in cli.mistake(
        "upload", dataset, str(source), "--metadata", str(scalar), code=2)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    assert "is not UTF-8 text" in cli.mistake("upload", dataset, str(source), "--metadata", str(binary), code=2)
    assert json.loads(cli("datasets", "show", dataset, "--json"))["latest_version"] == 1  # nothing was added

def test_report_without_matplotlib_says_what_to_install(cli: Cli, dataset: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert "pip install 'tuplehub[report]'" in cli.mistake("metrics", "report", dataset)


def test_to_pandas_without_pandas_says_what_to_install(hub: Client, dataset: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    export = hub.datasets.get(dataset).export()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtra, match=r"pip install 'tuplehub\[pandas\]'"):
        export.to_pandas()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_raises_a_tuplehub_error(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with Client(url, token="tht_unused") as hub, pytest.raises(ServerUnreachable) as caught:
        hub.datasets.list()
    assert isinstance(caught.value, TuplehubError)
    assert isinstance(caught.value, httpx.TransportError)  # code that retried on transport errors still does
    assert f"cannot reach the server at {url}" in str(caught.value)

    runner = CliRunner(env={"TUPLEHUB_TOKEN": "tht_unused"})
    result = runner.invoke(app, ["datasets", "list", "--url", url])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"error: cannot reach the server at {url}")
    assert "hint: start one with `tuplehub serve`" in result.output
    result = runner.invoke(app, ["jobs", "list", "--url", url, "--json"])
    assert json.loads(result.stdout)["error"]["code"] == "server-unreachable"


def test_a_url_without_a_scheme_means_http(hub_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = hub_server.url.removeprefix("http://")
    monkeypatch.setenv("TUPLEHUB_URL", bare)
    with Client(token=admin_token(hub_server)) as hub:
        assert hub.url == hub_server.url
        assert hub.datasets.list().total >= 0
    with pytest.raises(InvalidRequest, match="is not an http:// or https:// address"):
        Client("ftp://example.org")


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "127.0.0.1:port"])
def test_a_malformed_url_is_a_tuplehub_error(url: str) -> None:
    """urlsplit's ValueError (an unclosed IPv6 bracket, a bad port) was a traceback."""
    with pytest.raises(InvalidRequest, match="is not an http:// or https:// address"):
        Client(url, token="tht_unused")
    result = CliRunner(env={"TUPLEHUB_TOKEN": "tht_unused"}).invoke(app, ["datasets", "list", "--url", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: the server URL 'http://{url.removeprefix('http://')}'")


def test_errors_are_json_on_stdout_with_json(cli: Cli, unique_name: str) -> None:
    result = cli.runner.invoke(app, ["datasets", "show", unique_name, "--json", "--url", cli.url])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["detail"]) == ("not-found", f"no dataset named {unique_name!r}")
    result = cli.runner.invoke(app, ["upload", unique_name, "missing.parquet", "--json", "--url", cli.url])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "usage"


def test_api_validation_reads_in_command_line_words(cli: Cli, dataset: str) -> None:
    output = cli.mistake("datasets", "create", "My Dataset")
    assert "dataset names use letters, digits, '.', '_' and '-'" in output
    assert "String should match pattern" not in output
    assert "tags use letters" in cli.mistake("datasets", "create", f"{dataset}-t", "--tag", "a b")
    ingests = json.loads(cli("jobs", "list", "--kind", "upload", "--json"))["items"]
    assert ingests
    assert {job["kind"] for job in ingests} == {"ingest"}
    output = cli("jobs", "list", "--kind", "uploads", code=2)
    assert "'ingest', 'export', 'derive', 'artifact', 'metrics', 'upload'" in output


def test_the_choices_are_the_api_enums() -> None:
    assert set(typing.get_args(options.UploadModes)) == {mode.value for mode in UploadMode}
    assert set(typing.get_args(options.JobKinds)) == {kind.value for kind in JobKind} | {"upload"}
    assert set(typing.get_args(options.JobStatuses)) == {status.value for status in JobStatus}


def test_destructive_commands_ask_and_refuse_without_a_terminal(cli: Cli, hub: Client, dataset: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    output = cli.mistake("datasets", "delete", dataset, code=2)
    assert "no terminal to ask for confirmation" in output
    assert "--yes" in output
    hub.datasets.get(dataset)  # still there
    for refused in (("users", "delete", "nobody"), ("groups", "delete", "nogroup"), ("roles", "delete", "norole"),
                    ("tokens", "revoke", "0" * 32)):
        assert "--yes" in cli.mistake(*refused, code=2)

    monkeypatch.setattr(options, "on_terminal", lambda: True)
    assert "nothing was changed" in cli("datasets", "delete", dataset, input="n\n", code=1)
    hub.datasets.get(dataset)
    assert f"deleted dataset {dataset}" in cli("datasets", "delete", dataset, input="y\n")
    with pytest.raises(NotFound):
        hub.datasets.get(dataset)


def test_cancelling_a_finished_job_says_so(cli: Cli, dataset: str) -> None:
    job = json.loads(cli("jobs", "list", "--kind", "ingest", "--json"))["items"][0]
    assert f"job {job['id']} already succeeded; nothing to cancel" in cli("jobs", "cancel", job["id"])


def test_a_wrong_password_hints_nothing_circular(hub_server: EmbeddedServer, tmp_path: Path) -> None:
    runner = CliRunner(env={"TUPLEHUB_TOKEN": None, "TUPLEHUB_CONFIG_DIR": str(tmp_path)})
    result = runner.invoke(app, ["login", "--username", "admin", "--password-stdin", "--url", hub_server.url],
                           input="wrong password\n")
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "run `tuplehub login`" not in result.output


def test_version_names_the_package_and_its_key_libraries() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("tuplehub 0.")
    assert any(line.startswith("pyarrow ") for line in lines)
    assert any(line.startswith("python 3.") for line in lines)


def test_tables_fit_100_columns_and_jobs_show_plain_progress(cli: Cli, dataset: str) -> None:
    listing = cli("jobs", "list")
    assert max(len(line) for line in listing.splitlines()) <= 100
    header = listing.splitlines()[0].split()
    assert header == ["ID", "KIND", "DATASET", "STATUS", "PROGRESS", "CREATED", "ERROR"]
    assert '{"fraction"' not in listing
    assert dataset[:8] in listing


def test_create_exist_ok_and_a_fresh_repr(cli: Cli, hub: Client, unique_name: str) -> None:
    cli("datasets", "create", unique_name, "--tag", "first")
    assert "already exists" in cli.mistake("datasets", "create", unique_name)
    again = json.loads(cli("datasets", "create", unique_name, "--exist-ok", "--tag", "second", "--json"))
    assert again["tags"] == ["first"]  # the card is left as it was
    ds = hub.datasets.create(unique_name, exist_ok=True)
    assert repr(ds) == f"<Dataset {unique_name} (no versions yet)>"
    ds.upload(episode_arrays(episodes=2, length=5)).wait()
    assert repr(ds) == f"<Dataset {unique_name} v1>"


def test_export_samples_and_rebalances(cli: Cli, dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "sample.parquet"
    cli("export", dataset, "--sample-n", "2", "--seed", "3", "-o", str(out))
    assert len(set(pq.read_table(out).column("episode_id").to_pylist())) == 2
    cli("export", dataset, "--keep", '{"op": "gt", "field": "reward", "value": 0}', "--rest-fraction", "0",
        "-o", str(out))
    assert min(pq.read_table(out).column("reward").to_pylist()) > 0
    assert "one of --sample-n and --sample-fraction" in cli.mistake(
        "export", dataset, "--sample-n", "2", "--sample-fraction", "0.5", code=2)


def test_artifact_commands(cli: Cli, dataset: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.bin"
    policy.write_bytes(b"weights" * 1000)
    metadata = tmp_path / "meta.json"
    metadata.write_text('{"algorithm": "CQL"}')
    uploaded = json.loads(cli("artifacts", "upload", str(policy), "--metadata", str(metadata), "--dataset", dataset,
                              "--json"))
    artifact = uploaded["id"]
    assert (uploaded["size"], uploaded["metadata"], uploaded["datasets"]) == (7000, {"algorithm": "CQL"}, [dataset])
    assert artifact in cli("artifacts", "list", "--dataset", dataset)
    assert json.loads(cli("artifacts", "show", artifact, "--json"))["name"] == "policy.bin"
    copy = tmp_path / "copy.bin"
    assert "saved" in cli("artifacts", "download", artifact, "-o", str(copy))
    assert copy.read_bytes() == policy.read_bytes()
    assert json.loads(cli("artifacts", "link", artifact, "--json"))["datasets"] == []
    assert json.loads(cli("artifacts", "publish", artifact, "--public", "--json"))["visibility"] == "public"
    assert "--yes" in cli.mistake("artifacts", "delete", artifact, code=2)
    cli("artifacts", "delete", artifact, "--yes")
    assert "no artifact" in cli.mistake("artifacts", "show", artifact)


def test_benchmarks_create_and_datasets_on_it(cli: Cli, unique_name: str) -> None:
    name = f"pend-{unique_name}"
    created = json.loads(cli("benchmarks", "create", "Pendulum-v1", "--kwargs", '{"g": 9.81}', "--wrapper",
                             "gymnasium.wrappers:ClipAction", "--name", name, "--json"))
    assert created["spec"]["kwargs"] == {"g": 9.81}
    assert [w["entry_point"] for w in created["spec"]["wrappers"]] == ["gymnasium.wrappers.transform_action:ClipAction"]
    again = json.loads(cli("benchmarks", "create", "Pendulum-v1", "--kwargs", '{"g": 9.81}', "--wrapper",
                           "gymnasium.wrappers:ClipAction", "--name", name, "--json"))
    assert again["id"] == created["id"]  # the same environment, the same benchmark
    on_it = json.loads(cli("datasets", "create", unique_name, "--benchmark", name, "--json"))
    assert on_it["benchmark"] == created["id"]
    assert unique_name in cli("benchmarks", "show", name)
    assert "cannot make 'Nope-v0'" in cli.mistake("benchmarks", "create", "Nope-v0", code=2)
    assert "no benchmark is named" in cli.mistake("datasets", "create", f"{unique_name}-2", "--benchmark", "nope",
                                                  code=2)


def test_a_row_level_metric_shows_no_episode_count(cli: Cli, dataset: str) -> None:
    table = cli("metrics", "compute", dataset, "-m", "behavioral_entropy", "-m", "returns")
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.strip() and not line.startswith("note")}
    assert rows["returns"].split()[-1] == "4"  # episodes used
    assert not rows["behavioral_entropy"].rstrip().endswith(" 0")  # was "EPISODES 0", read as "none used"


def test_an_upload_error_names_column_row_and_reason_once() -> None:
    from tuplehub.client.cli.errors import describe
    from tuplehub.storage.errors import InvalidUpload

    error = InvalidUpload("nan is not a finite number", column="reward", row=42, reason="not-finite")
    assert describe(error) == {"code": "invalid-upload",
                               "detail": "column 'reward', row 42: nan is not a finite number (reason=not-finite)"}


def test_lineage_of_a_missing_dataset_or_version_fails(cli: Cli, dataset: str) -> None:
    """It printed 'nope@None: not readable' (or 'no such version') and exited 0."""
    assert "no dataset named 'no-such-dataset'" in cli.mistake("lineage", "no-such-dataset")
    assert f"dataset {dataset!r} has no version 7 (latest is 1)" in cli.mistake("lineage", f"{dataset}@7")
    assert "uploaded by job" in cli("lineage", dataset)


def test_a_wrapper_that_is_not_one_or_lacks_its_kwargs(cli: Cli) -> None:
    """Each ended in a TypeError traceback from calling the wrapper."""
    output = cli.mistake("benchmarks", "create", "Pendulum-v1", "--wrapper", "gymnasium.wrappers:TimeLimit", code=2)
    assert "missing 1 required positional argument: 'max_episode_steps'" in output
    assert '"kwargs"' in output  # the hint shows how to give them
    assert "is not a gymnasium wrapper class" in cli.mistake("benchmarks", "create", "Pendulum-v1", "--wrapper",
                                                            "os:getcwd", code=2)
    assert "unexpected keyword argument 'bad'" in cli.mistake(
        "benchmarks", "create", "Pendulum-v1", "--wrapper",
        '{"entry_point": "gymnasium.wrappers:TimeLimit", "kwargs": {"bad": 1}}', code=2)


def test_every_name_rule_and_metric_mistake_reads_in_command_line_words(cli: Cli, dataset: str) -> None:
    """These printed the API's words: ``body.name: String should match pattern '^[a-z]...'``, ``Input tag 'nope'
    found using 'metric'``, ``body.metrics.0.behavioral_entropy.alpha: Input should be a valid number``."""
    assert "group names use lower-case letters" in cli.mistake("groups", "create", "My Group")
    assert "role names use lower-case letters" in cli.mistake("roles", "create", "My Role", "--right", "dataset:read")
    assert "--media-type must look like type/subtype" in cli.mistake(
        "artifacts", "upload", __file__, "--media-type", "not a type")
    output = cli.mistake("metrics", "compute", dataset, "-m", "nope")
    assert output.startswith("error: -m/--metric 'nope' is not one of 'returns',")
    assert "error: -p behavioral_entropy.alpha must be a number" in cli.mistake(
        "metrics", "compute", dataset, "-m", "behavioral_entropy", "-p", "behavioral_entropy.alpha=abc")
    assert "error: -p shannon_entropy.nope is not a known option" in cli.mistake(
        "metrics", "compute", dataset, "-m", "shannon_entropy", "-p", "shannon_entropy.nope=1")


def test_the_translated_patterns_are_the_api_patterns() -> None:
    """If the API changes a name rule, the CLI's plain words for it must change with it."""
    def pattern_of(annotated: object) -> str:
        return next(m.pattern for m in typing.get_args(annotated)[1].metadata if hasattr(m, "pattern"))

    for pattern in (NAME_PATTERN, pattern_of(Tag), PRINCIPAL_PATTERN, pattern_of(RoleName), MEDIA_TYPE):
        message = f"String should match pattern '{pattern}'"
        error = InvalidRequest(f"body.name: {message}", errors=[{"location": "body.name", "message": message}])
        assert "String should match" not in describe(error, "groups create")["detail"], pattern


def test_an_append_that_repeats_episodes_names_the_cli_option(cli: Cli, dataset: str, tmp_path: Path) -> None:
    """The hint read 'upload with mode=replace', the Python argument, where the CLI takes --mode replace."""
    again = tmp_path / "again.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=2, length=5)), again)
    output = cli.mistake("upload", dataset, str(again))
    assert "upload with --mode replace" in output
    assert "mode=replace" not in output


def test_metric_notes_wrap_at_words_within_100_columns(cli: Cli, dataset: str) -> None:
    """A coverage note on a dataset without a benchmark was one 166-character line that wrapped mid-word."""
    shown = cli("metrics", "show", dataset)
    assert "features were scaled" in shown
    assert max(len(line) for line in shown.splitlines()) <= 100
    assert all(line.startswith(("note: ", "  ")) for line in shown.split("note: ", 1)[1].splitlines()[1:])


def test_a_password_prompt_without_a_terminal_is_refused(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """`users create bob < /dev/null` printed getpass's GetPassWarning, 'input may be echoed' and 'Aborted!'."""
    for args in (("users", "create", "bobby"), ("users", "password", "admin"), ("login", "--username", "admin")):
        output = cli.mistake(*args, code=2)
        assert "there is no terminal to ask for the password" in output
        assert "--password-stdin" in output
    assert "bobby" not in cli("users", "list")
    monkeypatch.setattr(options, "on_terminal", lambda: True)  # on a terminal it asks, hidden, as before
    assert "Password" in cli("users", "create", "bobby", input="long-enough-pw\nlong-enough-pw\n")


def test_jobs_show_gives_progress_and_error_as_sentences(cli: Cli, dataset: str, tmp_path: Path) -> None:
    """It printed ``progress: {"fraction": 0.0, ...}`` (stale, for a failed job) and ``error: {"code": ...}``."""
    again = tmp_path / "again.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=2, length=5)), again)
    cli.mistake("upload", dataset, str(again))
    failed = json.loads(cli("jobs", "list", "--kind", "ingest", "--status", "failed", "--json"))["items"][0]
    shown = cli("jobs", "show", failed["id"])
    assert "error: column 'episode_id': episode 0 is already in version 1" in shown
    assert "(reason=duplicate-episode)" in shown
    assert "progress:" not in shown
    assert '{"code"' not in shown
    assert '{"fraction"' not in shown
    assert json.loads(cli("jobs", "show", failed["id"], "--json"))["error"]["reason"] == "duplicate-episode"


@pytest.mark.parametrize(("args", "words"), [
    (("benchmarks", "create", "CartPole-v1", "--random-return", "nan"), "nan is not a finite number"),
    (("benchmarks", "create", "CartPole-v1", "--expert-return", "inf"), "inf is not a finite number"),
    (("benchmarks", "create", "CartPole-v1", "--max-episode-steps", "-5"), "greater than or equal to 1"),
    (("export", "DATASET", "--keep", '{"op": "gt", "field": "reward", "value": 0}', "--rest-fraction", "2"),
     "less than or equal to 1"),
])
def test_out_of_range_numbers_are_usage_errors(cli: Cli, dataset: str, args: tuple[str, ...], words: str) -> None:
    """Each was a traceback: JSON's 'Out of range float values', gymnasium's AssertionError, pydantic's
    ValidationError for Rebalance."""
    output = cli(*[dataset if arg == "DATASET" else arg for arg in args], code=2)
    assert words in output
    assert "Traceback" not in output


def test_derive_sources_and_policy_ids_read_in_command_line_words(cli: Cli, dataset: str) -> None:
    """``--source "my data"`` said ``dataset: String should match pattern '^[A-Za-z0-9]...'``; a policy that is not
    an artifact id said ``body.metrics.0.policy_value.policy: String should match pattern '^[0-9a-f]{64}$'``."""
    output = cli.mistake("derive", f"{dataset}-d", "--source", "my data", code=2)
    assert "--source my data: dataset names use letters, digits" in output
    assert "String should match" not in output
    output = cli.mistake("metrics", "compute", dataset, "-m", "policy_value", "-p", "policy_value.policy=abc")
    assert "-p policy_value.policy must be an artifact id: 64 hexadecimal digits" in output
