"""Agent definitions as data: who does what, on which tier, with which limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agents import _prompts as prompts
from endpoints.config import FleetConfig, FleetError


class AgentSpec(BaseModel):
    """A specialist agent.

    Attributes:
        name: Registry key, used by the planner's schema.
        role: Short title.
        expertise: One line the planner reads to assign tasks.
        system_prompt: System message for every call.
        primary_tier: Fleet tier the agent runs on.
        fallback_tier: Tier to try when the primary's endpoints fail.
        tool_allowlist: Tools the agent may call (names; wired by integrations).
        temperature: Sampling temperature.
        max_tokens: Completion cap for one task.
        planner_hint: When the planner should pick this agent (one rule line of the
            planner prompt); empty for agents the planner picks by expertise alone.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    role: str
    expertise: str
    system_prompt: str
    primary_tier: str
    fallback_tier: str | None = None
    tool_allowlist: tuple[str, ...] = ()
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, gt=0)
    planner_hint: str = ""

    def tiers(self) -> list[str]:
        """The tier chain to try, primary first."""
        return [self.primary_tier] + ([self.fallback_tier] if self.fallback_tier else [])


DEFAULT_AGENT = "researcher"
"""Who gets a planner task whose agent is unknown and has no close match."""

# max_tokens: the sketch's 2048-4096 everywhere makes small models ramble for minutes;
# these cover a focused answer per subtask (the synthesizer writes the long one).
DEFAULT_AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in [
        AgentSpec(
            name="researcher",
            planner_hint="any web lookups",
            role="Research Specialist",
            expertise="Web search, document analysis, citation tracking, fact verification",
            system_prompt=prompts.RESEARCHER,
            primary_tier="tools",
            fallback_tier="reasoning",
            tool_allowlist=("web_search", "fetch_webpage", "vision.image_search"),
            temperature=0.3,
            max_tokens=512,
        ),
        AgentSpec(
            name="reasoner",
            planner_hint="deep analysis of other tasks' results",
            role="Deep Reasoning Specialist",
            expertise="Complex analysis, multi-step logic, synthesis, critical evaluation",
            system_prompt=prompts.REASONER,
            primary_tier="reasoning",
            fallback_tier="tools",
            temperature=0.5,
            max_tokens=768,
        ),
        AgentSpec(
            name="cad_designer",
            planner_hint="3D model creation",
            role="CAD Generation Specialist",
            expertise="Parametric modeling, organic shapes, fabrication constraints, DFM",
            system_prompt=prompts.CAD_DESIGNER,
            primary_tier="tools",
            fallback_tier="coder",
            tool_allowlist=(
                "generate_cad_model",
                "vision.image_search",
                "vision.store_selection",
            ),
            temperature=0.4,
            max_tokens=512,
        ),
        AgentSpec(
            name="fabricator",
            role="Fabrication Engineer",
            expertise="3D printing, slicing, material selection, printer routing, G-code",
            system_prompt=prompts.FABRICATOR,
            primary_tier="tools",
            fallback_tier="reasoning",
            tool_allowlist=(
                "fabrication.open_in_slicer",
                "fabrication.submit_job",
                "fabrication.check_queue",
                "fabrication.segment_mesh",
            ),
            temperature=0.2,
            max_tokens=512,
        ),
        AgentSpec(
            name="coder",
            planner_hint="code generation tasks",
            role="Software Engineer",
            expertise="Python, TypeScript, CadQuery, OpenSCAD, algorithm implementation",
            system_prompt=prompts.CODER,
            primary_tier="coder",
            fallback_tier="tools",
            temperature=0.2,
            max_tokens=1024,
        ),
        AgentSpec(
            name="vision_analyst",
            role="Visual Analysis Specialist",
            expertise="Image understanding, print failure detection, CAD screenshot analysis",
            system_prompt=prompts.VISION_ANALYST,
            primary_tier="vision",
            fallback_tier=None,
            tool_allowlist=("vision.analyze_image", "camera.snapshot"),
            temperature=0.3,
            max_tokens=384,
        ),
        AgentSpec(
            name="analyst",
            role="Data Analyst",
            expertise="Metrics interpretation, cost analysis, quality scoring, recommendations",
            system_prompt=prompts.ANALYST,
            primary_tier="tools",
            fallback_tier="reasoning",
            tool_allowlist=("memory.recall", "memory.store"),
            temperature=0.3,
            max_tokens=512,
        ),
        AgentSpec(
            name="summarizer",
            role="Content Summarizer",
            expertise="Compression, key point extraction, TL;DR generation",
            system_prompt=prompts.SUMMARIZER,
            primary_tier="summary",
            fallback_tier="tools",
            temperature=0.3,
            max_tokens=256,
        ),
    ]
}


def validate_agents(agents: dict[str, AgentSpec], fleet: FleetConfig) -> None:
    """Check that every agent's tiers exist in the fleet.

    Raises:
        FleetError: An agent names a tier the fleet lacks; the message says which.
    """
    problems = [
        f"agent {spec.name!r} uses tier {tier!r}"
        for spec in agents.values()
        for tier in spec.tiers()
        if tier not in fleet.tiers
    ]
    if problems:
        raise FleetError(
            f"fleet {fleet.name!r} ({fleet.source or 'in memory'}) lacks tiers the agents "
            f"need: {'; '.join(problems)}. Add the tier to the fleet file or change the agent."
        )
