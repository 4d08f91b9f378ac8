"""A sweep's life after ``dcutmix-train -m``: its objective, its plan, its status and its resume."""
