from django_durable import workflow


def validate(order):
    return order


process_order = workflow("process_order", [validate])
