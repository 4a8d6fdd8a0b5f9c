"""The operator console and the device lab: web pages a running network serves (``offpay
network run`` starts them as a service of their own), server-rendered with Jinja2 and htmx
(vendored in ``static/``), reading every party only through its HTTP routes."""
