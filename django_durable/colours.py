"""One colour per status, shared by every picture of an execution (the admin's badges,
the overview, the diagram), so a status looks the same wherever a person meets it."""

STATUS_COLOURS = {
    "pending": "#6c757d",
    "running": "#0d6efd",
    "waiting": "#b58900",
    "completed": "#198754",
    "failed": "#dc3545",
    "cancelled": "#495057",
    "compensating": "#fd7e14",
    "compensated": "#6f42c1",
    "compensation_failed": "#a4161a",
    "resumed": "#5c7cfa",  # a step's run up to a wait, continued by a later run
    "skipped": "#adb5bd",
}
