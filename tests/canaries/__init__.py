"""The canary property test's parts: canaries and their forms, request builders per client, the rig, the search."""
