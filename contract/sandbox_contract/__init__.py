"""The contract the HTTP API and the operator share: pure functions over plain data.

- `request`: what a request means: limits and their resolution (`ExecutionLimits.resolve`), input
  files and their rules, and `resolve_request`, the one validation both sides run;
- `result`: `Phase`, and `Result`, the one constructor of results and the one mapping between the
  runner's document, the HTTP API's fields and a SandboxExecution's status;
- `runner_spec`: the runner's spec for a resolved request;
- `crd`: the SandboxExecution's names, labels, spec mapping and stored sizes;
- `catalogue`: the languages, their images and commands;
- `settings`: configuration read from SANDBOX_* variables, one parser for both programs.

Nothing here talks to Kubernetes or HTTP: the runner's package is its only dependency besides PyYAML
for the catalogue. Why it is a package of its own: docs/design.md.
"""
