"""The plugin's controller: collects the task scores, writes the run record after every task,
and at the end applies the gates and writes the reports (``pytest_koembed.run.finish``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_koembed.plugin.session import KoembedSession, column_of, gate_settings, prompt_settings
from pytest_koembed.records import TaskScore


class KoembedController:
    """Collects task scores on the controller (the only process that writes anything)."""

    def __init__(self, config: pytest.Config, state: KoembedSession) -> None:
        self.config = config
        self.state = state
        # True once pytest_sessionfinish has judged the run (Holm, gates) and written its files:
        # the pytest-html page (plugin.html_report) is written after, by pytest-html's trylast
        # pytest_sessionfinish, which pluggy calls after this plain one.
        self.finished = False

    @property
    def journal(self) -> Path | None:
        """A copy of the record in pytest's cache dir, kept even without --koembed-json."""
        cache = getattr(self.config, "cache", None)  # set by cacheprovider, after our configure
        return cache.mkdir("koembed") / "last-run.json" if cache is not None else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing: take the selection from the workers."""
        columns = {column_of(nodeid) for nodeid in ids} - {None}
        self.state.selected = [s.column for s in self.state.suite.tasks if s.column in columns]
        shard = self.state.shard
        if shard is not None and self.state.shard_block is None:  # the workers' block follows
            self.state.shard_block = {
                "index": shard.index,
                "count": shard.count,
                "tasks": list(self.state.selected),
                "selected": None,
            }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker's shard block (with the selection it split) comes with its output."""
        block = getattr(node, "workeroutput", {}).get("koembed_shard")
        if block is not None:
            self.state.shard_block = block
            if self.state.policy is not None:  # what the workers' items were judged with
                self.state.policy.selected = tuple(block["selected"])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "koembed_score", None)
        if data is None:
            column = column_of(report.nodeid)
            if column is None or not report.failed:
                return
            # No score came with the report: the xdist worker running the task crashed.
            from pytest_koembed.evaluation.run import failed_score

            lines = [line.strip() for line in str(report.longreprtext).splitlines()]
            said = [line for line in lines if "crashed" in line] or [x for x in lines if x]
            reason = said[-1] if said else "the worker running the task crashed"
            data = failed_score(self.state.suite.task(column), reason, report.duration).to_dict()
        score = TaskScore.from_dict(data)
        self.state.scores[score.column] = score
        examples = getattr(report, "koembed_examples", None)
        if examples is not None:
            from pytest_koembed.evaluation.per_example import frame_from_text

            self.state.examples[score.column] = frame_from_text(examples)
        else:
            self.state.examples.pop(score.column, None)
        info = getattr(report, "koembed_encoder_info", None)
        if info is not None and info not in self.state.encoder_infos:
            self.state.encoder_infos.append(info)
        loaded = getattr(report, "koembed_model_loaded", None)
        if loaded is not None:  # [worker, whether its encoder has loaded the weights by now]
            self.state.model_loaded[str(loaded[0])] = bool(loaded[1])
        self.write(complete=False)

    def record(self, *, complete: bool = False) -> dict[str, Any]:
        from pytest_koembed.gate.verdicts import baseline_block
        from pytest_koembed.reports.summary import run_record

        state = self.state
        policy = state.policy
        record = run_record(
            model=state.model,
            suite=state.suite,
            scheme=state.scheme,
            scores=state.scores,
            encoder_infos=state.encoder_infos,
            model_loads=sum(state.model_loaded.values()) if state.model_loaded else None,
            selected=state.selected,
            started=state.started,
            complete=complete,
            interrupted=state.interrupted,
            baseline=baseline_block(
                policy.choice.text, policy.describe(), state.scores.values(), policy
            )
            if policy is not None
            else None,
            gates=[g.to_dict() for g in state.gate_results],
        )
        record["split"] = state.split
        if state.checkpoint:
            record["checkpoint"] = dict(state.checkpoint)
        if state.shard_block is not None:
            record["shard"] = state.shard_block
            record["gate_settings"] = gate_settings(self.config)  # for koembed gate
            record["prompt_settings"] = prompt_settings(self.config)  # for koembed merge
            paired = (record.get("baseline") or {}).get("paired")
            if paired is not None and policy is not None:  # Holm is left to koembed gate
                label = f"{state.shard_block['index']}/{state.shard_block['count']}"
                paired["shard"] = {"label": label, "bonferroni_m": policy.paired_count}
        if state.intervals is None:
            return record
        return state.intervals.add_to(record, state.suite, state.examples)

    def write_files(self, record: Mapping[str, Any], path: Path) -> None:
        """The run record and its per-example sidecar (``per_example.write_run_files``)."""
        from pytest_koembed.evaluation.per_example import write_run_files
        from pytest_koembed.records import write_json

        write_run_files(record, path, self.state.examples, write_json)

    def write(self, *, complete: bool = False) -> None:
        """Rewrite the run record after every finished task: a killed run keeps what it finished.

        The per-example sidecar is rewritten with it, just before it, so the two stay in step.
        A failed write never stops the run: ``--koembed-json`` is retried at every task and at
        the end, where a failure is a summary line and a non-zero exit status.
        """
        record = self.record(complete=complete)
        try:
            journal = self.journal
        except OSError as exc:
            journal = None
            self.state.write_errors["journal"] = f"not written: {_reason(exc)}"
        targets = [("--koembed-json", self.state.json_path), ("journal", journal)]
        for option, path in targets:
            if path is None:
                continue
            try:
                self.write_files(record, path)
            except OSError as exc:
                self.state.write_errors[option] = f"{path}: not written: {_reason(exc)}"
            else:
                self.state.write_errors.pop(option, None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        message = str(excinfo.value).strip()
        self.state.interrupted = (
            f"interrupted ({excinfo.typename}{': ' + message if message else ''})"
        )

    def pytest_internalerror(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.state.interrupted = f"internal error ({excinfo.typename}: {_reason(excinfo.value)})"

    def _finish_state(self, session: pytest.Session) -> bool:
        """Whether the run is complete: it ended normally and every selected task reported.
        Otherwise ``state.interrupted`` says why not."""
        state = self.state
        ended = session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.TESTS_FAILED,
            pytest.ExitCode.NO_TESTS_COLLECTED,  # all deselected: gates say "not checked"
        )
        missing = [c for c in state.selected if c not in state.scores]
        if ended and not missing and state.interrupted is None:
            return True
        if state.interrupted is None:
            stop = session.shouldstop or session.shouldfail
            if isinstance(stop, str) and stop:
                state.interrupted = stop  # -x / --maxfail: "stopping after 1 failures"
            elif session.exitstatus == pytest.ExitCode.INTERRUPTED:
                state.interrupted = "interrupted"
            elif session.exitstatus == pytest.ExitCode.INTERNAL_ERROR:
                state.interrupted = "internal error"
            else:
                state.interrupted = f"{len(missing)} selected task(s) did not report"
        return False

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Gates (``--koembed-fail-under``), the run record, reports and baseline files.

        Like pytest-cov's ``--cov-fail-under``: a failed gate (or a requested output that could
        not be written) turns exit status 0 into 1 here, before the terminal summary is printed.
        ``--collect-only`` writes nothing. An incomplete run (interrupted, ``-x``) is recorded
        with ``"complete": false``; its gates are not checked and no report or baseline is
        written. The verdicts and reports themselves are ``pytest_koembed.run.finish``'s, which
        ``koembed gate`` applies to a saved record.
        """
        from pytest_koembed.run.finish import conclude, publish

        if self.config.option.collectonly:
            return
        state = self.state
        complete = self._finish_state(session)
        state.complete = complete
        shard = state.shard.label if state.shard is not None else None
        state.gate_results, failed = conclude(
            state.policy,
            state.scores,
            state.suite,
            lambda: self.record(complete=True),
            complete=complete,
            interrupted=state.interrupted,
            shard=shard,
            examples=state.examples,
        )
        self.write(complete=complete)
        if state.json_path is not None and "--koembed-json" in state.write_errors:
            failed = True
        if complete:
            state.published = publish(
                self.record(complete=True),
                state.suite,
                state.reports,
                state.policy,
                self.write_files,
            )
            failed = failed or state.published.failed
        if state.history_dir is not None:
            failed = self._add_to_history() or failed
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if (
            shard is not None
            and complete
            and not state.selected
            and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        ):
            session.exitstatus = pytest.ExitCode.OK  # more shards than tasks: an empty shard
        self.finished = True

    def _add_to_history(self) -> bool:
        """``--koembed-history DIR``: add a complete run (``run.history``); True when it could
        not be written (a requested output: exit status 1). An incomplete run is one line."""
        from pytest_koembed.errors import KoembedError
        from pytest_koembed.run.finish import Line
        from pytest_koembed.run.history import add_run, why_not_added

        state = self.state
        assert state.history_dir is not None
        record = self.record(complete=state.complete)
        why = why_not_added(record)
        if why is not None:
            state.history_line = Line(f"history: not added to {state.history_dir}: {why}")
            return False
        try:
            added = add_run(state.history_dir, record, state.examples, state.history_keep)
        except (KoembedError, OSError) as exc:
            state.history_line = Line(f"history: not written: {_reason(exc)}", red=True)
            return True
        pruned = f"; {len(added.pruned)} older sidecar(s) pruned" if added.pruned else ""
        name = state.checkpoint.get("name")
        state.history_line = Line(f"history: run of {name} added as {added.path}{pruned}")
        return False

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.collectonly:
            return
        lines, rows_text = self.summary()
        terminalreporter.ensure_newline()  # else the first line after the header is blank
        terminalreporter.section("koembed summary")
        for line in lines:
            terminalreporter.write_line(line.text, red=line.red)
        if rows_text:
            terminalreporter.section("koembed leaderboard rows")
            terminalreporter.write(rows_text)

    def summary(self) -> tuple[list[Any], str | None]:
        """The ``koembed summary`` lines (``finish.Line``) and the rows text for the terminal
        (``--koembed-row -``); the pytest-html page shows the same lines."""
        from pytest_koembed.run.finish import Line, summary

        state = self.state
        outputs = []
        json_error = state.write_errors.get("--koembed-json")
        if json_error is not None:
            outputs.append(Line(f"--koembed-json {json_error}", red=True))
        elif state.json_path is not None:
            outputs.append(Line(f"run record written to {state.json_path}"))
        journal_error = state.write_errors.get("journal")
        if journal_error is not None:
            outputs.append(Line(f"note: pytest cache copy of the run record {journal_error}"))
        if state.history_line is not None:
            outputs.append(state.history_line)
        outputs += [Line(note) for note in _loading_notes(self.config, state.model)]
        return summary(self.record(complete=state.complete), state.published, outputs)


def _loading_notes(config: pytest.Config, model: str) -> list[str]:
    """The loading options without effect on this run (``invocation.no_effect_notes``)."""
    from pytest_koembed.invocation import no_effect_notes

    return no_effect_notes(
        model,
        revision=config.getoption("koembed_revision"),
        devices=config.getoption("koembed_devices"),
        devices_min_texts=config.getoption("koembed_devices_min_texts"),
    )


def _reason(exc: BaseException) -> str:
    """An exception as one line: ``[Errno 28] No space left on device``."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
