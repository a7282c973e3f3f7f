"""What runs a service's scripts: the script API (:mod:`.context`), the runner, local runs
without Ray (:mod:`.local`), and the run records they exchange (:mod:`.runs`)."""
