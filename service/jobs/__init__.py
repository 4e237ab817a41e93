"""Jobs in Redis: the typed record (`record`), the model pinned at submit (`pinned`), submit/read/cancel/delete
and the state machine (`store`), every worker-side chain write (`chains`), and a finished job's results
(`assemble`). Import the modules themselves; this package imports nothing."""
