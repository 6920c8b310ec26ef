"""Which Dockerfiles run as folder agents without a container engine."""

from __future__ import annotations

import pytest

from cattery.control.builds.dockerfile import DockerfileNotUnderstood, plan_folder

UV_PROJECT = """FROM dailyco/pipecat-base:latest

# Enable bytecode compilation
ENV UV_COMPILE_BYTECODE=1
ENV UV_LINK_MODE=copy

RUN --mount=type=cache,target=/root/.cache/uv \\
    --mount=type=bind,source=uv.lock,target=uv.lock \\
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \\
    uv sync --locked --no-install-project --no-dev

COPY ./bot.py bot.py
"""
PIP_PROJECT = """FROM dailyco/pipecat-base:0.1.8
COPY ./requirements.txt requirements.txt
RUN pip install --no-cache-dir --upgrade -r requirements.txt
COPY ./bot.py bot.py
"""


@pytest.mark.parametrize("text", [UV_PROJECT, PIP_PROJECT], ids=["uv", "pip"])
def test_pipecat_quickstart_dockerfiles_are_understood(text: str) -> None:
    plan = plan_folder(text)
    assert plan.base.startswith("dailyco/pipecat-base:")
    assert plan.steps[0].startswith("Step 1/")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (PIP_PROJECT + "RUN false\n", "RUN false"),
        (PIP_PROJECT + "RUN apt-get install -y ffmpeg\n", "apt-get install"),
        ("FROM python:3.12\nCOPY bot.py bot.py\n", "FROM python:3.12"),
        (PIP_PROJECT + "FROM dailyco/pipecat-base:latest\n", "multi-stage"),
        (PIP_PROJECT + 'CMD ["python", "bot.py"]\n', "CMD"),
        (PIP_PROJECT + "COPY --from=builder /x /x\n", "COPY --from"),
        ("# nothing\n", "empty"),
    ],
)
def test_anything_else_names_the_step_and_the_engine_setting(text: str, names: str) -> None:
    with pytest.raises(DockerfileNotUnderstood) as refused:
        plan_folder(text)
    message = str(refused.value)
    assert names in message
    if names != "empty":
        assert "CATTERY_CONTAINER__ENGINE_URL" in message
