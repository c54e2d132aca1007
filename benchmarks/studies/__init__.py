"""Study files: each module defines ``STUDY`` (a :class:`benchmarks.study.Study`); ``_tasks`` holds the shared tasks."""
