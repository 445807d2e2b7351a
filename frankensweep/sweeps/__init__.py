"""A sweep's lifecycle, in the order a sweep lives it.

``request`` is what a client submits; ``submission`` validates it and stores the sweep with its
first round; ``config`` reads a stored sweep's settings once into typed objects; ``rounds``
advances the search round by round as its strategy proposes; ``status`` holds the status rules;
``leaderboard`` ranks what was evaluated. The API and the workers call these; nothing here knows
HTTP or loads a model.
"""
