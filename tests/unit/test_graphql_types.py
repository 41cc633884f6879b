"""The GraphQL types and the REST resources cannot drift: every field of every resource
model is a field of its GraphQL type, in camelCase, and the other way round (save the
fields GraphQL adds on purpose); submitJob's arguments are CreateJob's fields."""

from __future__ import annotations

import pytest
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLType
from pydantic import BaseModel

from sse_jobs import models
from sse_jobs.web.graphql.schema import SCHEMA, SUBMIT_FIELDS

# (REST model, GraphQL type, fields only GraphQL has)
PAIRS = [
    (models.Job, "Job", set()),
    (models.JobLinks, "JobLinks", set()),
    (models.JobError, "JobError", set()),
    (models.JobList, "JobList", {"lastEventId"}),
    (models.JobListLinks, "JobListLinks", set()),
    (models.JobTypeInfo, "JobType", set()),
    (models.JobTypeDefaults, "JobTypeDefaults", set()),
]


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def graphql_type(name: str) -> GraphQLObjectType:
    found = SCHEMA._schema.get_type(name)
    assert isinstance(found, GraphQLObjectType), name
    return found


def unwrapped(kind: GraphQLType) -> GraphQLType:
    while isinstance(kind, GraphQLNonNull | GraphQLList):
        kind = kind.of_type
    return kind


@pytest.mark.parametrize(("model", "name", "extra"), PAIRS, ids=[p[1] for p in PAIRS])
def test_every_field_of_the_resource_is_a_field_of_its_graphql_type(
    model: type[BaseModel], name: str, extra: set[str]
) -> None:
    fields = graphql_type(name).fields
    assert set(fields) - extra == {camel(field) for field in model.model_fields}
    for field, info in model.model_fields.items():
        required = info.is_required() and type(None) not in getattr(
            info.annotation, "__args__", ())
        if required and camel(field) not in {"result", "params"}:  # JSON: null is a value
            assert isinstance(fields[camel(field)].type, GraphQLNonNull), field


def test_nested_resources_are_nested_graphql_types() -> None:
    job = graphql_type("Job").fields
    assert unwrapped(job["links"].type) is graphql_type("JobLinks")
    assert unwrapped(job["error"].type) is graphql_type("JobError")
    listing = graphql_type("JobList").fields
    assert unwrapped(listing["jobs"].type) is graphql_type("Job")
    assert unwrapped(listing["links"].type) is graphql_type("JobListLinks")
    assert unwrapped(graphql_type("JobType").fields["defaults"].type) is graphql_type(
        "JobTypeDefaults")


def test_submit_job_takes_every_field_of_a_submission_and_an_idempotency_key() -> None:
    mutation = SCHEMA._schema.mutation_type
    assert mutation is not None
    arguments = set(mutation.fields["submitJob"].args)
    assert set(SUBMIT_FIELDS.values()) == set(models.CreateJob.model_fields)
    assert arguments == set(SUBMIT_FIELDS) | {"idempotencyKey"}


def test_the_state_and_event_enums_are_the_streams_words() -> None:
    from sse_jobs.states import EventName, JobState

    state = SCHEMA._schema.get_type("JobState")
    event = SCHEMA._schema.get_type("EventName")
    assert set(state.values) == {s.value for s in JobState}  # type: ignore[union-attr]
    assert set(event.values) == {e.value for e in EventName}  # type: ignore[union-attr]
