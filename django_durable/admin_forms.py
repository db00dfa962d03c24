"""The admin's forms: answering a pending input (one kind per input type), sending an
event, cancelling with a reason, resuming, editing a schedule.

Each answer form turns what was posted into the value `inputs.answer` expects; that function
validates it once more against the input (its type, choices and fields), so the rules
live in one place and a form only has to offer the right widgets. Choices are offered
by position, so typed values (1, True, "1") come back as exactly what the step offered.
"""

from typing import Any

from django import forms

from . import registry
from .dsl.cron import cron_problem
from .models import InputType, PendingInput, Schedule

APPROVE, REJECT = "approved", "rejected"


class AnswerForm(forms.Form):
    """The base: a form that knows its input and gives the answer's value."""

    def __init__(self, pending: PendingInput, *args: Any, **kwargs: Any) -> None:
        self.pending = pending
        super().__init__(*args, **kwargs)

    def value(self) -> Any:
        raise NotImplementedError


class ApprovalForm(AnswerForm):
    """No fields: the Approve or Reject button that was pressed is the answer."""

    decision = forms.ChoiceField(choices=[(APPROVE, "Approve"), (REJECT, "Reject")])

    def value(self) -> str:
        return self.cleaned_data["decision"]


class TextForm(AnswerForm):
    answer = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))

    def value(self) -> str:
        return self.cleaned_data["answer"]


class SingleChoiceForm(AnswerForm):
    def __init__(self, pending: PendingInput, *args: Any, **kwargs: Any) -> None:
        super().__init__(pending, *args, **kwargs)
        self.fields["answer"] = forms.ChoiceField(
            choices=_positions(pending.choices), widget=forms.RadioSelect
        )

    def value(self) -> Any:
        return _chosen(self.pending.choices, self.cleaned_data["answer"])


class MultiChoiceForm(AnswerForm):
    def __init__(self, pending: PendingInput, *args: Any, **kwargs: Any) -> None:
        super().__init__(pending, *args, **kwargs)
        self.fields["answer"] = forms.MultipleChoiceField(
            choices=_positions(pending.choices),
            widget=forms.CheckboxSelectMultiple,
            required=False,
        )

    def value(self) -> list:
        return [_chosen(self.pending.choices, index) for index in self.cleaned_data["answer"]]


class FieldsForm(AnswerForm):
    """The fields the step declared, each with the widget of its type."""

    def __init__(self, pending: PendingInput, *args: Any, **kwargs: Any) -> None:
        super().__init__(pending, *args, **kwargs)
        for field in pending.fields:
            self.fields[field["name"]] = _form_field(field)

    def value(self) -> dict:
        answer = {}
        for field in self.pending.fields:
            raw = self.cleaned_data.get(field["name"])
            if field["type"] == "select" and raw not in (None, ""):
                raw = field["options"][int(raw)]
            if raw not in (None, "") or field["type"] == "boolean":
                answer[field["name"]] = raw
        return answer


FORMS = {
    InputType.APPROVAL: ApprovalForm,
    InputType.FREE_TEXT: TextForm,
    InputType.SINGLE_CHOICE: SingleChoiceForm,
    InputType.MULTI_CHOICE: MultiChoiceForm,
    InputType.FORM: FieldsForm,
}


def form_for(pending: PendingInput, data: Any = None) -> AnswerForm:
    return FORMS[pending.input_type](pending, data=data)


def _positions(choices: list[dict]) -> list[tuple[str, str]]:
    return [
        (str(index), choice.get("label") or str(choice["value"]))
        for index, choice in enumerate(choices)
    ]


def _chosen(choices: list[dict], position: str) -> Any:
    return choices[int(position)]["value"]


def _form_field(field: dict) -> forms.Field:
    options = {"label": field.get("label") or field["name"], "required": field["required"]}
    kind = field["type"]
    if kind == "textarea":
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), **options)
    if kind == "number":
        return forms.CharField(widget=forms.NumberInput(attrs={"step": "any"}), **options)
    if kind == "boolean":
        return forms.BooleanField(**{**options, "required": False})
    if kind == "select":
        choices = [(str(index), str(option)) for index, option in enumerate(field["options"])]
        return forms.ChoiceField(choices=[("", "---------"), *choices], **options)
    if kind == "date":
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **options)
    if kind == "email":
        return forms.EmailField(**options)
    return forms.CharField(**options)


class SendEventForm(forms.Form):
    """An event for an execution: its name and a JSON payload (empty: none)."""

    name = forms.CharField(max_length=200)
    payload = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text='JSON, e.g. {"paid": true}',
    )


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
    compensate = forms.BooleanField(
        required=False, help_text="Run the compensations of its completed steps first."
    )


class ResumeForm(forms.Form):
    """Nothing to fill in: the page says what resuming does and asks to confirm."""


class ScheduleForm(forms.ModelForm):
    """A schedule as people edit it: the workflow picked from those registered, the
    cron and zone checked together (`cron_problem`) so a mistake shows on its field."""

    workflow_name = forms.ChoiceField(label="Workflow")
    input = forms.JSONField(
        required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 3}), help_text="JSON"
    )

    class Meta:
        model = Schedule
        fields = ["name", "workflow_name", "cron", "timezone", "input", "queue", "enabled"]
        help_texts = {
            "cron": "Five fields: minute hour day-of-month month day-of-week, e.g. 0 9 * * 1-5",
            "timezone": "An IANA zone the cron is read in, e.g. Europe/Paris",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "workflow_name" in self.fields:
            names = [definition.name for definition in registry.all_workflows()]
            current = self.instance.workflow_name
            if current and current not in names:
                names.append(current)
            self.fields["workflow_name"].choices = [(name, name) for name in names]

    def clean(self) -> dict:
        data = super().clean()
        cron = data.get("cron", self.instance.cron)
        timezone = data.get("timezone", self.instance.timezone)
        if cron is not None and timezone is not None:
            problem = cron_problem(cron, timezone)
            if problem:
                field = "cron" if "cron expression" in problem else "timezone"
                if field in self.fields:
                    self.add_error(field, problem)
                else:
                    raise forms.ValidationError(problem)
        if data.get("input") is None and "input" in self.fields:
            data["input"] = {}
        return data
