"""Run lifecycle: what defines a run's trajectory, how it resumes, and how it fails.

Modules here keep a run trustworthy: the fingerprint checked before a resume touches the
run directory, the record of every resume, and the guard that stops a diverged run.
"""
