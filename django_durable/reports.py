"""How reports read as text: times, durations, rules and funnel bars, the same in every
report (`insights`, graphs' insights, the commands' tables)."""

from datetime import UTC, datetime

BAR_WIDTH = 30
RULE = "=" * 80
SUB_RULE = "-" * 10


def format_time(moment: datetime | str | None) -> str:
    """A time (or its ISO text, as in the reports) as the texts show it:
    `2024-03-06 12:00:00Z`, in UTC, to the second; "-" for None."""
    if not moment:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_duration(seconds: float | None) -> str:
    """Seconds as the texts show them: `350 ms`, `4.2 s`, `5 min 3 s`, `2 h 5 min`, `3 days 4 h`."""
    if seconds is None:
        return "-"
    seconds = max(float(seconds), 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours} h" + (f" {rest // 60} min" if rest // 60 else "")
    days, rest = divmod(whole, 86400)
    unit = "day" if days == 1 else "days"
    return f"{days} {unit}" + (f" {rest // 3600} h" if rest // 3600 else "")


def funnel_line(entry: dict) -> str:
    """A funnel's bar and figures for one step or node of a flow_analytics report."""
    share = entry["reached_percentage"]
    filled = round(BAR_WIDTH * share / 100)
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    to_reach = entry["average_seconds_to_reach"]
    reach = "-" if to_reach is None else f"+{format_duration(to_reach)}"
    return (
        f"{bar} {share:5.1f}%  reached {entry['reached_count']}, avg time to reach {reach}, "
        f"ends here {entry['ends_here_count']} ({entry['ends_here_percentage_of_all']:.1f}% "
        f"of all, {entry['ends_here_percentage_of_reached']:.1f}% of reached)"
    )


def analysis_opening(title: list[str], report: dict) -> list[str]:
    """The lines a flow_analytics text opens with (a workflow's or a graph's): what was
    analysed, when, since when, and its executions by status."""
    stats = report["executions"]
    lines = [*title, f"Analyzed at: {format_time(report['analyzed_at'])}"]
    if report.get("since"):
        lines.append(f"Since: {format_time(report['since'])}")
    lines += ["", "EXECUTION STATS:", SUB_RULE, f"Total executions: {stats['count']}"]
    if stats["by_status"]:
        lines.append(
            "By status: " + ", ".join(f"{name} {n}" for name, n in stats["by_status"].items())
        )
    return lines
