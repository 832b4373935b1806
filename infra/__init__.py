"""The Pulumi program's components and the Lambda artifact build. Never imported by `pipeline`."""
