"""Which configured project an event or gate belongs to, confirmed with GitLab before the bot writes there."""

from __future__ import annotations

import logging

from bot.core.errors import PermanentError
from bot.core.settings import ProjectSettings
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def confirmed_project(rt: Runtime, project_id: int, path: str) -> ProjectSettings | None:
    """The project's config, once GitLab confirms that id really is that path. TransientError propagates.

    A payload matched by a path glob carries an id too; without this check a forged event (it needs the
    webhook secret) could pair a configured path with another project's id and have the bot write there.
    """
    project = rt.settings.project_for(project_id, path)
    if project is None or project.id == project_id:
        return project
    try:
        actual = rt.gitlab.project_path(project_id)
    except PermanentError as exc:
        log.warning("project %s: cannot confirm its path (%s); not acting on it", project_id, exc)
        return None
    if actual != path:
        log.warning("project %s is %r, not %r as the event says; not acting on it", project_id, actual, path[:100])
        return None
    return project
