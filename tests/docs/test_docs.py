"""The documentation runs: every command, example and figure in docs/*.md is checked here,
against the simulated broker, so the docs cannot drift from the code.

What is checked:
- Every fenced block holding commands or code (`console`, `bash`, `shell`, `sh`, `pycon`,
  `python`) on every page (pages in the order of mkdocs.yml's nav, blocks in page order) is
  either run or explicitly marked `<!-- not-run: reason -->` on the line(s) just before it,
  with a reason. No silent skips: a command block without a `$ ` line, `$ ` or `>>>` lines in
  any other kind of block, a fence without a language, or a marker without a reason or on a
  block that never runs (yaml, text, mermaid) fails the test. `test_page_runs_as_shown` prints
  the marked blocks with their reasons (`pytest -rA`); marked `python` blocks are compiled.
- `console` / `bash` / `shell` / `sh` blocks: each line starting with `$ ` is a command
  (a trailing `\\` continues it). It runs with bash in a working directory (below) and must
  exit with the code named by a trailing `# exit N` comment, 0 by default. The lines after
  a command, up to the next one, are its shown output: each non-blank line must match a line
  of the real output (stdout, then stderr), in order, where `...` stands for anything, and
  whitespace and table-drawing characters are ignored (rich tables). A line that is only
  `...` is skipped.
- `pycon` blocks: doctests, run in this process with ELLIPSIS and NORMALIZE_WHITESPACE; a
  page's blocks share one namespace. Worked examples (fees and taxes) print what the code
  computes, so every number in them is checked.
- `python` blocks: run as a script (exit 0); marked ones are still compiled.
- `yaml` blocks titled `config/execution.yaml` must be an excerpt of that file (same keys,
  same values).
- The site builds with `mkdocs build --strict` (no warning), every `runbook` annotation in
  deploy/prometheus/alerts.yml resolves to a page and a heading anchor of the built site, and
  the benchmarks table equals bench/results/*.json wherever a result file's `meta.when` is
  quoted on the page.

How commands are run (the mapping from what a reader types to what runs here):
- Working directories: one for all pages (`plain`), in nav order, so `make demo` on the first
  page leaves the data the later pages query; and one for the service (`svc`). Both hold
  symlinks to the repository's `.venv`, `examples`, `deploy` and `config`, so the docs' relative
  paths work as they do in a clone.
- `make demo` runs as `.venv/bin/execstate demo` (what the target runs once `.venv` exists).
  Any other `make` target must be in a not-run block.
- Every `execstate SUBCOMMAND` gets `-c <settings>`: config/execution.yaml with
  `telemetry.metrics_port: 0` (any free port: no clash with other tests or a real service).
- A command ending in `&` is a background service: it must be `execstate run ...`; it starts
  once (stdout and stderr to files, never an unread pipe), is shared by every page that shows
  the same command, and is stopped with SIGTERM at the end. From that line on, the page's
  commands run in its directory. The test waits until the service runs and the simulated day
  has played (no events queued, fill count steady).
- `127.0.0.1:9464` (the default metrics port in the docs) becomes the service's real address.
- The environment has no `SJ_*` variables and no `CLICKHOUSE_DSN`: the simulated broker and
  the embedded database, always.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog.testing
import yaml

from service_proc import LoggedProcess, spawn

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
BENCH_RESULTS = ROOT / "bench" / "results"
VENV = Path(sys.executable).parent.parent  # the .venv running this test
LINKED = (".venv", "examples", "deploy", "config")
COMMAND_LANGS = {"console", "bash", "shell", "sh"}
COMMAND_TIMEOUT_S = 180


# --- reading the pages ----------------------------------------------------------------------


class _NavLoader(yaml.SafeLoader):
    """mkdocs.yml has `!!python/name:` tags (the mermaid fence); read them as plain strings."""


_NavLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def nav_pages() -> list[str]:
    config = yaml.load(MKDOCS_YML.read_text(), Loader=_NavLoader)
    pages: list[str] = []

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                walk(value)
            else:
                pages.append(value)

    walk(config["nav"])
    return pages


PAGES = nav_pages()

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    info: str
    lines: list[str]  # the content, de-indented
    not_run: str | None  # the marker's reason, None when the block is to run

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def title(self) -> str:
        m = re.search(r'title="([^"]*)"', self.info)
        return m.group(1) if m else ""


def read_blocks(page: str) -> list[Block]:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            closing = close.group("fence") if close else ""
            if closing.startswith(fence[0]) and len(closing) >= len(fence) and not close.group("info").strip():
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = _NOT_RUN.search(lines[j]) if j >= 0 else None
        lang = info.split()[0].lower() if info else ""
        blocks.append(Block(page, start + 1, lang, info, body, marker.group("reason") if marker else None))
    return blocks


@dataclass
class Command:
    text: str  # as shown, without "$ "
    line: int
    shown: list[str]  # output lines shown after it
    exit_code: int = 0
    background: bool = False


def _split_comment(text: str) -> tuple[str, str]:
    """(command, comment): the comment starts at an unquoted `#` that begins a word."""
    quote = ""
    for k, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or text[k - 1].isspace()):
            return text[:k].rstrip(), text[k + 1:].strip()
    return text.rstrip(), ""


def commands_of(block: Block) -> list[Command]:
    out: list[Command] = []
    k = 0
    while k < len(block.lines):
        line = block.lines[k]
        if line.startswith("$ "):
            text, start = line[2:], block.line + 1 + k
            while text.endswith("\\") and k + 1 < len(block.lines):
                k += 1
                text = text[:-1] + " " + block.lines[k].strip()
            command, comment = _split_comment(text)
            m = re.search(r"\bexit (\d+)\b", comment)
            cmd = Command(command, start, [], int(m.group(1)) if m else 0)
            if command.endswith("&") and not command.endswith("&&"):
                cmd.text, cmd.background = command[:-1].rstrip(), True
            out.append(cmd)
        elif out:
            out[-1].shown.append(line)
        k += 1
    return out


# --- matching shown output -------------------------------------------------------------------

_DRAWING = re.compile(r"[\u2500-\u257f\s]+")


def _norm(line: str) -> str:
    return _DRAWING.sub("", line)


def missing_output(shown: list[str], actual: str) -> str | None:
    """The first shown line with no match (in order) in the actual output, else None."""
    real = [_norm(x) for x in actual.splitlines()]
    pos = 0
    for line in shown:
        if not line.strip() or line.strip() == "...":
            continue
        pattern_text = _norm(line)
        if not pattern_text:
            continue  # a table border
        pattern = re.compile(".*".join(re.escape(part) for part in pattern_text.split("...")))
        for k in range(pos, len(real)):
            if pattern.fullmatch(real[k]):
                pos = k + 1
                break
        else:
            return line
    return None


# --- running ---------------------------------------------------------------------------------


@dataclass
class PageResult:
    commands: int = 0
    doctests: int = 0
    scripts: int = 0
    not_run: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class DocRun:
    """Runs every page's blocks in nav order; see the module docstring for the mapping."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.plain, self.svc = base / "plain", base / "svc"
        for d in (self.plain, self.svc):
            d.mkdir()
            for name in LINKED:
                (d / name).symlink_to(VENV if name == ".venv" else ROOT / name)
        settings = yaml.safe_load((ROOT / "config" / "execution.yaml").read_text())
        settings["telemetry"]["metrics_port"] = 0
        self.config = base / "docs-test.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SJ_") and k != "CLICKHOUSE_DSN"}
        self.env["NO_MKDOCS_2_WARNING"] = "1"
        self.service: LoggedProcess | None = None
        self.service_command = ""
        self.address = ""
        self.results: dict[str, PageResult] = {}

    # command text -> what runs
    def prepare(self, text: str) -> str | None:
        if re.match(r"make\s+demo\b", text):
            text = ".venv/bin/execstate demo" + text[len(re.match(r"make\s+demo", text).group(0)):]
        elif re.match(r"make\b", text):
            return None
        if not re.search(r"(?:^|\s)(?:-c|--config)\b", text):
            text = re.sub(r"((?:^|[\s/])execstate)\s+([a-z][a-z-]*)", lambda m: f"{m.group(1)} {m.group(2)} -c {self.config}", text)
        if self.address:
            text = text.replace("127.0.0.1:9464", self.address)
        return text

    def run_page(self, page: str) -> PageResult:
        result = self.results[page] = PageResult()
        cwd = self.plain
        globs: dict = {"__name__": f"docs.{page}"}
        for block in read_blocks(page):
            if block.not_run is not None:
                result.not_run.append(f"{block.where}: {block.not_run}")
                if block.lang == "python":
                    try:
                        compile("\n".join(block.lines), block.where, "exec")
                    except SyntaxError as exc:
                        result.failures.append(f"{block.where}: not-run python block does not compile: {exc}")
                continue
            if block.lang in COMMAND_LANGS:
                for cmd in commands_of(block):
                    if cmd.background:
                        cwd = self.svc
                    self._run_command(page, cmd, cwd, result)
            elif block.lang == "pycon":
                self._run_doctest(block, globs, cwd, result)
            elif block.lang == "python":
                self._run_script(block, cwd, result)
        return result

    def _run_command(self, page: str, cmd: Command, cwd: Path, result: PageResult) -> None:
        where = f"docs/{page}:{cmd.line}"
        text = self.prepare(cmd.text)
        if text is None:
            result.failures.append(f"{where}: `{cmd.text}` cannot run here: put it in a block marked <!-- not-run: reason -->")
            return
        result.commands += 1
        if cmd.background:
            self._start_service(where, cmd.text, text, result)
            return
        try:
            proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            result.failures.append(f"{where}: `{cmd.text}` did not finish in {COMMAND_TIMEOUT_S} s")
            return
        output = proc.stdout + proc.stderr
        if proc.returncode != cmd.exit_code:
            result.failures.append(f"{where}: `{cmd.text}` exited {proc.returncode}, the docs say {cmd.exit_code}\n"
                                   f"ran: {text}\n--- output ---\n{output[-3000:]}")
            return
        missing = missing_output(cmd.shown, output)
        if missing is not None:
            result.failures.append(f"{where}: `{cmd.text}`: shown line not in the output (in order): {missing!r}\n"
                                   f"--- output ---\n{output[-4000:]}")

    def _start_service(self, where: str, shown: str, text: str, result: PageResult) -> None:
        if not re.search(r"(?:^|[\s/])execstate run\b", shown):
            result.failures.append(f"{where}: only `execstate run` may run in the background here, not `{shown}`")
            return
        if self.service is not None:
            if shown != self.service_command:
                result.failures.append(f"{where}: `{shown}` differs from the service already shown "
                                       f"(`{self.service_command}`): show one form")
            return
        self.service_command = shown
        self.service = spawn(["bash", "-c", "exec " + text], cwd=self.svc, env=self.env)
        try:
            self.address = wait_until_played(self.svc / "state", self.service)
        except AssertionError as exc:
            result.failures.append(f"{where}: the service did not come up: {exc}\n--- stderr ---\n{self.service.stderr_text()[-3000:]}")

    def _run_doctest(self, block: Block, globs: dict, cwd: Path, result: PageResult) -> None:
        parser = doctest.DocTestParser()
        text = "\n".join(block.lines) + "\n"
        test = parser.get_doctest(text, globs, block.where, str(DOCS / block.page), block.line)
        if not test.examples:
            result.failures.append(f"{block.where}: a pycon block without `>>>` examples")
            return
        report: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            # log lines (position_adjusted ...) are not the examples' output, whatever an earlier
            # test left structlog configured to
            with structlog.testing.capture_logs():
                runner.run(test, out=report.append, clear_globs=False)
        finally:
            os.chdir(previous)
        globs.update(test.globs)  # DocTest copies its globs: carry the page's names to its next block
        result.doctests += len(test.examples)
        if runner.failures:
            result.failures.append(f"{block.where}: {runner.failures} of {len(test.examples)} examples failed\n" + "".join(report)[-4000:])

    def _run_script(self, block: Block, cwd: Path, result: PageResult) -> None:
        script = self.base / f"{block.page.removesuffix('.md')}-{block.line}.py"
        script.write_text("\n".join(block.lines) + "\n")
        result.scripts += 1
        try:
            proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=self.env, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            result.failures.append(f"{block.where}: the python block did not finish in {COMMAND_TIMEOUT_S} s")
            return
        if proc.returncode != 0:
            result.failures.append(f"{block.where}: the python block exited {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}")

    def stop(self) -> int | None:
        if self.service is None:
            return None
        if self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
        try:
            self.service.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.service.kill()
            self.service.communicate(timeout=10)
            return -9
        return self.service.returncode


def wait_until_played(state: Path, proc: LoggedProcess, timeout_s: float = 90) -> str:
    """Wait until the service runs and its simulated day has played; return its host:port."""
    from execstate.control import ControlClient, ControlError

    client = ControlClient(state)
    deadline = time.monotonic() + timeout_s
    last: object = None
    steady_since, fills = None, -1
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}")
        try:
            status = client.request("status")
        except (OSError, ControlError) as exc:
            last = exc
            time.sleep(0.1)
            continue
        last = {k: status.get(k) for k in ("phase", "queue_depth")}
        now = time.monotonic()
        if status.get("phase") == "running" and status["queue_depth"] == 0 and status["counts"]["fills"] == fills:
            steady_since = steady_since or now
            if now - steady_since >= 1.0 and status.get("metrics_url"):
                return status["metrics_url"].removeprefix("http://").split("/", 1)[0]
        else:
            steady_since, fills = None, status["counts"]["fills"]
        time.sleep(0.2)
    raise AssertionError(f"not running and played after {timeout_s} s (last: {last!r})")


@pytest.fixture(scope="module")
def doc_run():
    base = Path(tempfile.mkdtemp(prefix="es-docs-", dir="/tmp"))  # short: Unix socket paths are limited
    run = DocRun(base)
    try:
        for page in PAGES:
            run.run_page(page)
        yield run
    finally:
        code = run.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert code in (None, 0), f"the service shown in the docs stopped with exit code {code} on SIGTERM"


# --- the tests -------------------------------------------------------------------------------


def test_every_page_is_in_the_nav():
    on_disk = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(PAGES) == on_disk


@pytest.mark.parametrize("page", PAGES)
def test_every_block_runs_or_says_why_not(page):
    problems = []
    for block in read_blocks(page):
        if block.not_run is not None:
            if not block.not_run:
                problems.append(f"{block.where}: a not-run marker needs a reason")
            if block.lang not in COMMAND_LANGS | {"python", "pycon"}:
                problems.append(f"{block.where}: a not-run marker on a `{block.lang}` block, which never runs")
            continue
        has_prompt = any(line.startswith("$ ") for line in block.lines)
        if block.lang in COMMAND_LANGS and not has_prompt:
            problems.append(f"{block.where}: a command block without `$ ` commands (mark it not-run, with a reason)")
        if block.lang not in COMMAND_LANGS and has_prompt:
            problems.append(f"{block.where}: `$ ` commands in a `{block.lang or 'plain'}` block: use `console`")
        if block.lang not in ("pycon", "python") and any(line.startswith(">>> ") for line in block.lines):
            problems.append(f"{block.where}: `>>>` examples in a `{block.lang or 'plain'}` block: use `pycon`")
        if not block.lang:
            problems.append(f"{block.where}: a fence without a language")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_shown(doc_run, page):
    result = doc_run.results[page]
    print(f"docs/{page}: {result.commands} commands, {result.doctests} doctest examples, {result.scripts} scripts run; "
          f"not run: {result.not_run or 'none'}")
    assert not result.failures, "\n\n".join(result.failures)
    runnable = [b for b in read_blocks(page) if b.not_run is None and b.lang in COMMAND_LANGS | {"python", "pycon"}]
    assert result.commands + result.doctests + result.scripts >= len(runnable)


def test_fee_examples_are_checked_numbers(doc_run):
    """The worked examples ran as doctests (so their TWD figures are the code's), all five cases."""
    text = (DOCS / "data-model.md").read_text()
    for case in ("A board lot", "An odd lot", "A day trade", "A TXF round trip", "A TXO premium"):
        assert f"**{case}.**" in text
    assert doc_run.results["data-model.md"].doctests >= 10


def test_config_excerpts_are_the_config():
    config = yaml.safe_load((ROOT / "config" / "execution.yaml").read_text())

    def check(excerpt, real, path):
        if isinstance(excerpt, dict):
            assert isinstance(real, dict), f"{path}: not a mapping in config/execution.yaml"
            for key, value in excerpt.items():
                assert key in real, f"{path}.{key}: not in config/execution.yaml"
                check(value, real[key], f"{path}.{key}")
        else:
            assert excerpt == real, f"{path}: the docs show {excerpt!r}, config/execution.yaml has {real!r}"

    checked = 0
    for page in PAGES:
        for block in read_blocks(page):
            if block.lang == "yaml":
                data = yaml.safe_load("\n".join(block.lines))
                if block.title == "config/execution.yaml":
                    check(data, config, block.where)
                    checked += 1
    assert checked


@pytest.fixture(scope="module")
def site():
    if shutil.which("mkdocs", path=str(VENV / "bin")) is None:
        pytest.skip("mkdocs is not installed: `make test` installs the docs extra (pip install -e '.[docs]')")
    out = Path(tempfile.mkdtemp(prefix="es-site-"))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([str(VENV / "bin" / "mkdocs"), "build", "--strict", "-f", str(MKDOCS_YML), "-d", str(out / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    yield proc, out / "site"
    shutil.rmtree(out, ignore_errors=True)


def test_site_builds_strict_without_warnings(site):
    proc, _ = site
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line], output


def test_alert_runbooks_resolve_to_page_anchors(site):
    proc, built = site
    assert proc.returncode == 0, proc.stderr
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert rules
    for rule in rules:
        annotations = rule.get("annotations", {})
        link = annotations.get("runbook_url") or annotations.get("runbook")
        assert link, f"alert {rule['alert']} has no runbook"
        path, _, anchor = link.partition("#")
        assert path.startswith("docs/") and path.endswith(".md") and anchor, f"{rule['alert']}: {link}"
        page = path.removeprefix("docs/").removesuffix(".md")
        html = built / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.is_file(), f"{rule['alert']}: {link}: no page {path}"
        assert f'id="{anchor}"' in html.read_text(), f"{rule['alert']}: {link}: no heading #{anchor} on {path}"


# --- benchmarks ------------------------------------------------------------------------------


def bench_figures(name: str, d: dict) -> list[str]:
    """The strings docs/benchmarks.md shows for one bench/results file."""
    med = statistics.median
    if name == "callback_hold":
        out = []
        for key in ("1k events/s", "saturation"):
            r = d[key]
            out += [f"{r['median_ns']['ours']:,} ns", f"{r['median_ns']['bare']:,} ns", f"{r['ratio_median']:.2f}x",
                    f"{r['p99_ns']['ours']:,} ns", f"{r['p99_ns']['bare']:,} ns", f"{r['ratio_p99']:.2f}x"]
        return out
    if name == "latency":
        scenarios = ("1k/s", "1k/s + busy thread", "10k/s", "10k/s + busy thread")
        return [f"{d[k][w]['p99']:,.1f} µs" for k in scenarios for w in ("ours_us", "floor_us")]
    if name == "throughput":
        m = med(d["ours_events_per_s"])
        return [f"{m:,.0f} events/s", f"{med(d['ours_no_journal_events_per_s']):,.0f} events/s",
                f"{med(d['ours_with_adjustment_logs_events_per_s']):,.0f} events/s", f"{d['ratio_with_adjustment_logs']:.2f}x",
                f"{m * d['fills'] / d['events']:,.0f} fills/s", f"{med(d['nautilus_fills_per_s']):,.0f} fills/s",
                f"{d['ratio_fill_rate_vs_nautilus']:.2f}x"]
    if name == "startup_rebuild":
        rec = med(d["reconcile_s"])
        return [f"{d['positions']} positions", f"{d['deals']:,} deals", f"{rec:.3f} s", f"{rec / d['floor_s']:.1f}x",
                f"floor {d['floor_s']:g} s", f"{med(d['startup_s']):.3f} s"]
    if name == "recorder":
        return [f"{d['fills']:,} fills", f"{d['ours_s']:.3f} s", f"{d['bare_s']:.3f} s", f"{d['ratio']:.2f}x",
                f"{d['process_s']:.3f} s", f"{d['bare_s'] / d['process_s']:.2f}x",
                f"{d['paced_durable_p50_ms']:.1f} / {d['paced_durable_p99_ms']:.1f} ms"]
    if name == "metrics_overhead":
        return [f"+{d['overhead_pct']:.1f}%"]
    return []


def test_benchmark_table_is_the_latest_results():
    files = sorted(BENCH_RESULTS.glob("*.json"))
    if not files:
        pytest.skip("no bench/results/*.json here (`make bench` writes them; they are not in git)")
    page = (DOCS / "benchmarks.md").read_text()
    stale, wrong = [], []
    for path in files:
        data = json.loads(path.read_text())
        when = data.get("meta", {}).get("when", "")
        if not bench_figures(path.stem, data):
            continue
        if when not in page:
            stale.append(f"{path.name} ({when})")
            continue
        wrong += [f"{path.name}: {figure!r} not on the page" for figure in bench_figures(path.stem, data) if figure not in page]
    assert not wrong, "\n".join(wrong)
    if stale:
        pytest.skip(f"bench/results newer than docs/benchmarks.md, update its table: {', '.join(stale)}")
