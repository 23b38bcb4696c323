"""ganzoo's built-in plugins, installed as the package ``ganzoo_plugins``.

Each module is registered through its own entry point in the ``ganzoo`` group (see pyproject.toml), exactly as
a third-party plugin would be; the core never imports these modules by name.
"""
