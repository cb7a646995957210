"""Who may ask, how often and what: identity (``identity``, ``keys``, ``jwt_auth``) now; rate
limits, budgets and prompt screening beside them."""
