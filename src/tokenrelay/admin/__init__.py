"""Administration of orgs, users, keys and budgets (no HTTP: ``tokenrelay.admin_http`` serves it,
``tokenrelay.commands`` calls it too), with who may do what (``roles``) and the audit trail."""
