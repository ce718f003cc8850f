"""The add-on's own page: live plots, a try-it box, the plan and recent requests.

A thin front end like the others: it reads the same telemetry payload MQTT publishes,
talks to the core only through `CoreApi`, and changes nothing (read-only, apart from the
try-it request and its cancel). In the add-on it is Home Assistant's ingress panel.
"""
