from django_durable import insights, registry
from django_durable.errors import UnknownWorkflow
from django_durable.graphs import definition as graph_definitions
from django_durable.management.base import DurableCommand, resolve_execution, usage_error


class Command(DurableCommand):
    help = (
        "Print a workflow's diagram as Mermaid text (graph TD): its steps, branches, "
        "parallel and foreach blocks, jumps and compensations. With --execution, each "
        "node is coloured by the status of its latest attempt in that execution. A graph "
        "of values (by name) is drawn as its nodes and their dependencies."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "workflow", metavar="WORKFLOW", help="A registered workflow's (or graph's) name."
        )
        parser.add_argument(
            "--execution",
            metavar="ID",
            help="Colour the diagram by this execution (its id or a unique prefix).",
        )

    def handle(self, *args, workflow, execution=None, **options):
        try:
            definition = registry.get(workflow)
        except UnknownWorkflow as unknown:
            if not any(graph.name == workflow for graph in graph_definitions.all_graphs()):
                raise unknown from None
            definition = graph_definitions.get(workflow)
        if execution is None:
            self.stdout.write(insights.mermaid(definition))
            return
        found = resolve_execution(execution)
        if found.workflow_name != definition.name:
            raise usage_error(
                f"Execution {found.id} is of workflow {found.workflow_name!r}, "
                f"not {definition.name!r}."
            )
        self.stdout.write(insights.mermaid(found))
