"""The worker process: claims executions and runs their steps on a pool of threads.

Each served queue has `concurrency` runner threads, each with its own database
connection. A runner claims for itself, and the claim opens the first attempt in the
same statement (`claims.claim_and_start`), so no claimed step waits in a queue where a
cancel could overtake it; it keeps claiming while work is runnable, waking an idle
neighbour when more is. The dispatcher (the main thread) runs the timers and wakes an
idle runner when work may be runnable: after a NOTIFY (heard by a listener thread on
PostgreSQL), a due time or the poll interval, which is only the fallback. A heartbeat
thread renews leases, refreshes the worker's row and fails attempts that overrun their
step timeout.

States: running (claiming) -> stopping (no new claims, running steps finish within the
grace period) -> stopped (what is left is released to other workers).
"""

import logging
import os
import queue as queue_module
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection, connections

from . import claims, clock, conf, engine, ids, releases, schedules, timers
from .dsl import Step
from .errors import WorkerError
from .models import CLAIMED_AS, StepExecution, WorkflowExecution
from .models import Worker as WorkerRow
from .scope import DATABASE_ERRORS

log = logging.getLogger("django_durable.worker")

TICK_SECONDS = 1.0
RECONNECT_SECONDS = 1.0
OFFER = "offer"  # what wakes a sleeping runner to claim; None tells it to stop


@dataclass
class QueueSlots:
    """A served queue: its runners' inbox of offers, and how many runners are awake
    (claiming or running)."""

    name: str
    concurrency: int
    poll_interval: float
    inbox: queue_module.Queue = field(default_factory=queue_module.Queue)
    busy: int = 0
    missed: bool = False  # an offer came while every runner was awake: look once more

    @property
    def free(self) -> int:
        return self.concurrency - self.busy


@dataclass
class Attempt:
    """A step attempt running on one of this worker's threads."""

    execution_id: uuid.UUID
    run_id: uuid.UUID
    started_at: object
    timeout: timedelta | None


class Worker:
    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        burst: bool = False,
        name: str | None = None,
        grace_seconds: float | None = None,
    ) -> None:
        queues = list(queues or conf.get("QUEUES"))
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.burst = burst
        self.grace_seconds = (
            conf.get("SHUTDOWN_GRACE_SECONDS") if grace_seconds is None else grace_seconds
        )
        self.slots = {
            queue: QueueSlots(
                name=queue,
                concurrency=concurrency or conf.queue_options(queue)["concurrency"],
                poll_interval=float(conf.queue_options(queue)["poll_interval"]),
            )
            for queue in queues
        }
        self.poll_interval = min(slot.poll_interval for slot in self.slots.values())
        self.state = "running"
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._attempts: dict[int, Attempt] = {}
        # Claims being worked on, counted: a timed-out attempt's thread may still be
        # finishing while another thread already runs the same execution's retry.
        self._held: Counter[uuid.UUID] = Counter()
        self._runners: list[threading.Thread] = []
        self._timers_due = 0.0
        self._next_due = None  # the earliest due time known (a timer, deadline, lease end)
        self._recheck_at = None  # when to claim once more after a notice (monotonic)
        # Bumped whenever any thread finds the database gone: one outage (a failover,
        # a restart) kills every thread's connection at once, and each runner drops its
        # own before its next work instead of finding out by failing that work.
        self._outages = 0
        self._found = 0  # claims that found work, for --burst to tell when it is done
        self._unreturned: dict[uuid.UUID, bool] = {}  # failed claims not given back yet
        self._stop_hearing = lambda: None  # this process's notices, where NOTIFY is not
        self._settled = threading.Condition(self._lock)  # a runner went back to sleep

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Work until stopped by a signal (or, with `burst`, until nothing is runnable)."""
        self._register()
        self._install_signal_handlers()
        self._start_threads()
        log.info(
            "Worker %s started: queues %s, %d threads.",
            self.name,
            ", ".join(f"{s.name}({s.concurrency})" for s in self.slots.values()),
            sum(s.concurrency for s in self.slots.values()),
        )
        try:
            self._dispatch()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Stop claiming; running steps get the grace period to finish."""
        if self.state == "running":
            self.state = "stopping"
            log.info("Worker %s stopping: finishing running steps.", self.name)
        self._wake.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.state != "running":
            log.warning("Second signal: worker %s exits now.", self.name)
            os._exit(1)
        self.stop()

    def _start_threads(self) -> None:
        for slot in self.slots.values():
            for index in range(slot.concurrency):
                self._runners.append(
                    self._spawn(self._run_slot, f"durable-{slot.name}-{index}", slot)
                )
        self._heartbeat = self._spawn(self._heartbeat_loop, "durable-heartbeat")
        self._listener = None
        if connection.vendor == "postgresql":
            self._listener = self._spawn(self._listen_loop, "durable-listener")
        else:  # no NOTIFY: what this process's own steps make runnable, heard at once
            self._stop_hearing = claims.listen_here(self._heard)

    def _spawn(self, target, name: str, *args) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        return thread

    def _shutdown(self) -> None:
        self.state = "stopping"
        self._stop_hearing()
        for slot in self.slots.values():
            for _ in range(slot.concurrency):
                slot.inbox.put(None)
        give_up_at = time.monotonic() + self.grace_seconds
        for thread in self._runners:
            thread.join(max(0.0, give_up_at - time.monotonic()))
        unfinished = sum(thread.is_alive() for thread in self._runners)
        self._with_database(self._release_and_unregister, unfinished)
        self._stopped.set()
        self._heartbeat.join(TICK_SECONDS * 2)
        self.state = "stopped"
        connection.close()
        log.info("Worker %s stopped.", self.name)

    def _release_and_unregister(self, unfinished: int) -> None:
        released = releases.release(
            self.name,
            "WorkerStopped",
            "The worker shut down before this attempt finished; the step runs again.",
        )
        if unfinished or released:
            log.warning(
                "Worker %s: %d step(s) still running after the grace period; released %d "
                "execution(s) to other workers.",
                self.name,
                unfinished,
                released,
            )
        WorkerRow.objects.filter(name=self.name).delete()

    # -- registration ------------------------------------------------------------------

    def _register(self) -> None:
        now = clock.now()
        self._remove_stale_workers()
        claims.unmark_unclaimable()
        schedules.sync()
        if connection.vendor == "sqlite":
            other = WorkerRow.objects.exclude(name=self.name).first()
            if other is not None:
                raise WorkerError(
                    f"Worker {other.name} (pid {other.pid} on {other.host}) already uses this "
                    "SQLite database, and SQLite supports one worker process. Stop it, or use "
                    "PostgreSQL to run several workers."
                )
        WorkerRow.objects.update_or_create(
            name=self.name,
            defaults={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.slots),
                "concurrency": sum(slot.concurrency for slot in self.slots.values()),
                "started_at": now,
                "last_seen_at": now,
            },
        )

    def _remove_stale_workers(self) -> None:
        """Forget workers that stopped heartbeating and, on SQLite (one machine), dead
        processes on this host, so a crashed development worker can restart at once."""
        stale_after = timedelta(seconds=max(3 * conf.get("HEARTBEAT_SECONDS"), 10))
        WorkerRow.objects.filter(last_seen_at__lt=clock.now() - stale_after).delete()
        if connection.vendor != "sqlite":
            # Elsewhere, containers may share a host name but not process ids; leases decide.
            return
        neighbours = WorkerRow.objects.filter(host=socket.gethostname()).exclude(name=self.name)
        for row in neighbours:
            if not _process_alive(row.pid):
                # Its process is gone for certain, so its work need not wait for the lease.
                releases.release(
                    row.name,
                    "WorkerLost",
                    "The worker running this attempt died; the step runs again.",
                )
                row.delete()

    # -- claiming ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        look = True  # whether idle runners should look for work this round
        while self.state == "running":
            self._wake.clear()
            try:
                if self._unreturned:
                    self._give_back_unreturned()
                look = self._run_timers_if_due() or look  # timers may make work runnable
                self._recheck_done()
                if self.burst:
                    if self._burst_round_found_nothing():
                        log.info("Worker %s: nothing runnable, exiting (--burst).", self.name)
                        return
                    continue
                if look:
                    self._offer_idle_runners()
                seconds, rechecking = self._seconds_until_due()
                woke = self._wake.wait(seconds)
                # Woken early (by a notice, whose listener offered work itself, a due
                # time noted, a stop), runners need no offer; at the end of a wait they do.
                look = not woke or rechecking
                woke = woke or rechecking
            except DATABASE_ERRORS as exc:
                log.warning("Worker %s: database unavailable (%s); retrying.", self.name, exc)
                self._lost_connection()
                woke = self._wake.wait(RECONNECT_SECONDS)
                look = True
            if not woke:
                self._timers_due = 0.0

    def _run_timers_if_due(self) -> bool:
        if time.monotonic() < self._timers_due:
            return False
        with self._lock:
            noted = self._next_due
        timers.run_timers()
        due = timers.next_wakeup()
        with self._lock:
            if self._next_due is not noted and self._next_due is not None:
                due = self._next_due if due is None else min(due, self._next_due)
            self._next_due = due  # a time a runner noted meanwhile is kept
        self._timers_due = time.monotonic() + self.poll_interval
        return True

    def _offer_idle_runners(self) -> None:
        for slot in self.slots.values():
            self._offer(slot)

    def _offer(self, slot: QueueSlots) -> None:
        """Wake one sleeping runner of `slot` to claim, if one sleeps (the others are
        already claiming or running, and claim again when they finish)."""
        with self._lock:
            if self.state != "running":
                return
            if slot.free <= 0:
                slot.missed = True  # a runner about to sleep claims once more instead
                return
            slot.busy += 1
        slot.inbox.put(OFFER)

    def _burst_round_found_nothing(self) -> bool:
        """--burst: offer work to the idle runners and wait until every runner sleeps
        again; True if no claim found any meanwhile."""
        with self._lock:
            found_before = self._found
        self._offer_idle_runners()
        with self._settled:
            while self.state == "running" and any(s.busy for s in self.slots.values()):
                self._settled.wait(TICK_SECONDS)
            return self._found == found_before

    def _seconds_until_due(self) -> tuple[float, bool]:
        """How long to sleep: until the next known due time, at most `poll_interval`
        (NOTIFY may wake us), or until the claim that follows a notice; and whether it is
        that claim (which runs no timers). The due time is the one the timers found, or
        an earlier one this worker's own threads set since: no query per wake-up."""
        seconds = self.poll_interval
        with self._lock:
            due, recheck_at = self._next_due, self._recheck_at
        if due is not None:
            seconds = min(seconds, max(0.01, (due - clock.now()).total_seconds()))
        if recheck_at is not None:
            until_recheck = max(0.0, recheck_at - time.monotonic())
            if until_recheck < seconds:
                return until_recheck, True
        return seconds, False

    def _recheck_done(self) -> None:
        """The claim about to run is the one a notice asked for, if its time has come;
        an earlier wake-up (a runner finishing, another notice) does not count."""
        with self._lock:
            if self._recheck_at is not None and time.monotonic() >= self._recheck_at:
                self._recheck_at = None

    def _note_timer(self, execution: WorkflowExecution) -> None:
        """An execution this worker parked or scheduled for later: wake up for it."""
        waits_for_time = (
            execution.status in CLAIMED_AS
            and not execution.ready
            and execution.locked_by is None
            and execution.run_at is not None
        )
        if waits_for_time and execution.run_at > clock.now():
            self._note_due(execution.run_at)

    def _note_due(self, due_at) -> None:
        with self._lock:
            if self._next_due is not None and self._next_due <= due_at:
                return
            self._next_due = due_at
        self._wake.set()

    def _heard(self, payload: str) -> None:
        """A NOTIFY: work runnable now on a queue, or falling due later."""
        try:
            queue, due_at = claims.parse_notice(payload)
        except Exception:  # the listener must outlive any notice
            log.exception("Worker %s: could not read the notice %r.", self.name, payload)
            self._wake.set()
            return
        if queue not in self.slots:
            return
        if due_at is None:
            self._offer(self.slots[queue])  # from here: one thread hop less than the dispatcher
            # Senders coalesce notices (claims.COALESCE_SECONDS): claim again that long
            # after this one, for work committed meanwhile without a notice of its own.
            with self._lock:
                self._recheck_at = time.monotonic() + claims.COALESCE_SECONDS
            self._wake.set()
        else:
            self._note_due(due_at)

    # -- running -----------------------------------------------------------------------

    def _run_slot(self, slot: QueueSlots) -> None:
        """A runner: sleep until offered work, then claim and run until none is left."""
        outages_seen = self._outages
        try:
            while slot.inbox.get() is OFFER:
                asleep = False
                try:
                    while self.state == "running":
                        if outages_seen != self._outages:
                            outages_seen = self._outages
                            connection.close()  # dead since the outage: reconnect first
                        execution = self._claim_for(slot)
                        if execution is None:
                            asleep = self._sleep_unless_missed(slot)
                            if asleep:
                                break
                            continue
                        if getattr(execution, "more_ready", True):
                            self._offer(slot)
                        try:
                            self._run_execution(execution, slot)
                        finally:
                            self._forget(execution)
                finally:
                    if not asleep:
                        self._sleep_unless_missed(slot, force=True)
        finally:
            connections.close_all()

    def _sleep_unless_missed(self, slot: QueueSlots, force: bool = False) -> bool:
        """A runner that found nothing goes back to sleep, unless an offer came while
        it was awake (which nobody took: every runner was): then it looks once more.
        Both under the lock, so no offer falls between the check and the sleep."""
        with self._settled:
            if slot.missed and not force:
                slot.missed = False
                return False
            slot.busy -= 1
            self._settled.notify_all()
            return True

    def _claim_for(self, slot: QueueSlots) -> WorkflowExecution | None:
        """Claim the next execution of `slot` and open its first attempt. If the claim's
        reply is lost, the database may have kept it: the token it was made under gives
        it back at once (not when its lease lapses), costing no recovery."""
        token = ids.time_ordered()
        try:
            execution = claims.claim_and_start(self.name, [slot.name], token)
        except DATABASE_ERRORS as exc:
            log.warning("Worker %s: database unavailable (%s); retrying.", self.name, exc)
            self._lost_connection()
            self._give_back(token, counted=False)
            return None
        except Exception:  # a runner thread must survive anything to keep its slot
            log.exception("Worker %s: claiming on %s failed.", self.name, slot.name)
            # The claim may have committed before the failure: give it back now, and
            # count it, so a claim that fails every time stops (MAX_RECOVERIES).
            self._give_back(token, counted=True)
            return None
        if execution is not None:
            with self._lock:
                self._held[execution.id] += 1
                self._found += 1
        return execution

    def _give_back(self, token, counted: bool) -> None:
        done = False
        try:
            done = self._with_database(releases.give_back_lost_claim, self.name, token, counted)
        except Exception:
            log.exception("Worker %s: could not give back a failed claim.", self.name)
        with self._lock:
            self._found += 1  # it may have found work, runnable again: look once more
            if not done:  # the dispatcher tries again each round, not only when it lapses
                self._unreturned[token] = counted

    def _give_back_unreturned(self) -> None:
        with self._lock:
            unreturned = dict(self._unreturned)
        for token, counted in unreturned.items():
            releases.give_back_lost_claim(self.name, token, counted)
            with self._lock:
                del self._unreturned[token]

    def _forget(self, execution: WorkflowExecution) -> None:
        with self._lock:
            self._held[execution.id] -= 1
            if self._held[execution.id] <= 0:
                del self._held[execution.id]
            self._attempts.pop(threading.get_ident(), None)

    def _run_execution(self, execution: WorkflowExecution, slot: QueueSlots) -> None:
        # The thread keeps its connection across executions (whatever CONN_MAX_AGE says:
        # reconnecting per execution would halve throughput); it is dropped only after a
        # database error, below.
        held_tokens = {execution.run_token}
        try:
            engine.run_claimed(
                execution,
                worker=self.name,
                queues=[slot.name],
                keep_going=lambda attempts: self.state == "running",
                on_attempt=self._track_attempt,
                tokens=held_tokens,
            )
            self._note_timer(execution)
        except DATABASE_ERRORS as exc:
            log.warning(
                "Worker %s lost the database while running %s (%s); releasing it.",
                self.name,
                execution.id,
                exc,
            )
            self._lost_connection()
            self._with_database(self._release_execution, execution, held_tokens)
        except BaseException:  # a runner thread must survive anything to keep its slot
            log.exception("Worker %s: unexpected error running %s.", self.name, execution.id)
            self._with_database(self._release_execution, execution, held_tokens)

    def _track_attempt(self, run: StepExecution, step: Step) -> None:
        with self._lock:
            self._attempts[threading.get_ident()] = Attempt(
                execution_id=run.execution_id,
                run_id=run.id,
                started_at=run.started_at,
                timeout=step.timeout,
            )

    def _release_execution(self, execution: WorkflowExecution, held_tokens: set) -> None:
        """Give back this thread's claim only, whichever of its tokens the database kept
        (a commit whose reply was lost may or may not have installed the next attempt's),
        and never a retry that another thread of this worker claimed meanwhile."""
        releases.release(
            self.name,
            "WorkerError",
            "The worker hit an error while recording this attempt; the step runs again.",
            execution_id=execution.id,
            run_tokens=held_tokens | {execution.run_token},
        )

    def _lost_connection(self) -> None:
        """This thread's connection failed: drop it, and tell the others theirs may be
        dead too."""
        connection.close()
        with self._lock:
            self._outages += 1

    def _with_database(self, action, *args, attempts: int = 5) -> bool:
        """Run a bookkeeping action, reconnecting a few times if the database drops;
        whether it was done."""
        for attempt in range(attempts):
            try:
                action(*args)
                return True
            except DATABASE_ERRORS as exc:
                self._lost_connection()
                if attempt == attempts - 1:
                    log.error("Worker %s: giving up on %s: %s", self.name, action.__name__, exc)
                    return False
                time.sleep(RECONNECT_SECONDS)
        return False

    # -- heartbeat ---------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        next_beat = 0.0
        try:
            while not self._stopped.wait(TICK_SECONDS):
                # Two duties, guarded apart: a failing timeout check must not stop the
                # lease renewals, or every step of this worker would run again elsewhere.
                self._guarded(self._time_out_overrunning_attempts)
                if time.monotonic() >= next_beat and self._guarded(self._beat):
                    next_beat = time.monotonic() + conf.get("HEARTBEAT_SECONDS")
        finally:
            connections.close_all()

    def _guarded(self, duty) -> bool:
        """Run a heartbeat duty; the heartbeat thread must outlive any one error."""
        try:
            duty()
            return True
        except DATABASE_ERRORS as exc:
            log.warning("Worker %s heartbeat: database unavailable (%s).", self.name, exc)
            self._lost_connection()
        except WorkerError as exc:
            log.error("Worker %s must stop: %s", self.name, exc)
            self.stop()
        except Exception:
            log.exception("Worker %s heartbeat: %s failed; trying again.", self.name, duty.__name__)
        return False

    def _beat(self) -> None:
        with self._lock:
            held = set(self._held)  # the ids with a positive count
        claims.renew_leases(self.name, held)
        seen = WorkerRow.objects.filter(name=self.name).update(last_seen_at=clock.now())
        if not seen:
            self._register()
        self._remove_stale_workers()

    def _time_out_overrunning_attempts(self) -> None:
        now = clock.now()
        with self._lock:
            overdue = [
                (ident, attempt)
                for ident, attempt in self._attempts.items()
                if attempt.timeout is not None and now - attempt.started_at > attempt.timeout
            ]
        for ident, attempt in overdue:
            timed_out = timers.time_out_attempt(attempt.execution_id, attempt.run_id)
            with self._lock:
                # Forget it only once handled: after a database error, the next tick retries.
                if self._attempts.get(ident) is attempt:
                    del self._attempts[ident]
            if timed_out:
                log.warning(
                    "Worker %s: attempt of execution %s overran its step timeout; failed it.",
                    self.name,
                    attempt.execution_id,
                )
                self._timers_due = 0.0  # its retry is a timer this worker must see
                self._wake.set()

    # -- wake-ups ----------------------------------------------------------------------

    def _listen_loop(self) -> None:
        """Hold a LISTEN connection; reconnect whenever it drops."""
        import psycopg

        while not self._stopped.is_set():
            try:
                with claims.listener(claims.CHANNEL) as listener:
                    self._offer_idle_runners()  # for what became runnable while away
                    while not self._stopped.is_set():
                        for notice in listener.notifies(timeout=TICK_SECONDS):
                            self._heard(notice.payload)
            except psycopg.Error as exc:
                log.warning("Worker %s listener: %s; reconnecting.", self.name, exc)
                with self._lock:
                    self._outages += 1
                self._stopped.wait(RECONNECT_SECONDS)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
