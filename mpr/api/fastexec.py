"""A faster way for graphql-core to fill in plain scalar fields (the bulk of a long list).

graphql-core resolves every field of every row the same way: a ``Path``, a
``ResolveInfo``, the resolver (Strawberry's wrapper around ``getattr``), an
awaitable check, then ``complete_value``. That costs ~6 µs per field, so
``jobs`` with 1,000 rows of eight fields spends most of its request there.

Most of those fields are Strawberry *basic* fields: no resolver, no field
extension, no arguments, a scalar type, read from an attribute of the row.
For them :class:`FastExecutionContext` reads the attribute and coerces it
with the scalar's own ``coerce_output_value`` — what graphql-core would end
up doing — and skips the rest. Everything else takes graphql-core's normal
path: fields with resolvers, arguments, permissions or extensions, objects,
lists, enums, a null in a non-null field, a value of an unexpected Python
type or one the scalar rejects (the field is then executed again the normal
way, so errors, their messages and paths are exactly graphql-core's). When a
schema extension hooks into resolving (Strawberry turns ``resolve`` hooks into
graphql-core middleware) the fast path is off for the whole request.

``tests/api/test_fastexec.py`` runs a set of documents (aliases, fragments,
directives, variables, nulls, errors) through this and through Strawberry's
stock execution context and compares the results.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from graphql import GraphQLNonNull, GraphQLObjectType, GraphQLScalarType
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

# Python types a basic field may hold for the fast path; anything else goes the normal way.
_PLAIN = frozenset({str, int, float, bool, dt.datetime, dt.date, dict, list})

# A plan entry, per response name of a selection set:
#   (LEAF, attribute, coerce function, non-null)          a basic scalar field
#   (PREFETCHED, field name, object type, Python class, field type)   an object field the row may carry
#   None                                                  graphql-core's normal path
LEAF, PREFETCHED = 0, 1
PREFETCH_KEY = "prefetched"  # StrawberryField metadata flag; the rows' dict attribute of the same name


def prefetchable(**kwargs: Any) -> Any:
    """``strawberry.field`` for a resolver whose value a list may have loaded in bulk beforehand.

    The row's ``prefetched`` dict, keyed by GraphQL field name, then holds the
    value; the resolver must return exactly that value when it is there (and
    load it itself otherwise). :class:`FastExecutionContext` then completes the
    value directly instead of calling the resolver once per row. Only for
    fields without arguments, permissions or field extensions.
    """
    import strawberry

    return strawberry.field(metadata={PREFETCH_KEY: True}, **kwargs)


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context with a direct path for basic scalar fields (see the module docs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        self._fast_enabled = manager is None or not manager.middlewares
        # id(grouped field set) -> (the set, kept alive so its id stays unique; {response name: plan entry})
        self._plans: dict[int, tuple[Any, dict[str, tuple | None]]] = {}

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> dict[str, tuple | None]:
        # graphql-core memoizes collected subfields per (type, field nodes): every row of a
        # list shares one grouped field set, so the plan is made once per list.
        cached = self._plans.get(id(grouped_field_set))
        if cached is not None and cached[0] is grouped_field_set:
            return cached[1]
        plan = {name: self._fast_field(parent_type, details) for name, details in grouped_field_set.items()}
        self._plans[id(grouped_field_set)] = (grouped_field_set, plan)
        return plan

    def _fast_field(self, parent_type: GraphQLObjectType, field_details_list: Any) -> tuple | None:
        node = field_details_list[0].node
        field_def = self.schema.get_field(parent_type, node.name.value)
        if field_def is None or field_def.args or node.arguments:
            return None
        definition = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if definition is None:
            return None
        field_type = field_def.type
        non_null = isinstance(field_type, GraphQLNonNull)
        named = field_type.of_type if non_null else field_type
        if getattr(field_def.resolve, "_is_default", False):  # Strawberry's marker for basic fields
            if isinstance(named, GraphQLScalarType) and getattr(definition, "default_resolver", None) is getattr:
                return LEAF, definition.python_name, named.coerce_output_value, non_null
            return None
        if (
            (definition.metadata or {}).get(PREFETCH_KEY)
            and not definition.permission_classes
            and not definition.extensions
            and isinstance(named, GraphQLObjectType)
            and named.is_type_of is None
        ):
            origin = getattr((named.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF), "origin", None)
            if origin is not None:
                return PREFETCHED, node.name.value, named, origin, field_type
        return None

    def _complete_prefetched(
        self, object_type: GraphQLObjectType, field_type: Any, field_details_list: Any, path: Path, value: Any
    ) -> Any:
        """What ``execute_field`` does once the resolver returned ``value``, errors handled the same way."""
        try:
            completed = self.collect_and_execute_subfields(object_type, field_details_list, path, value, None)
        except Exception as raw_error:  # noqa: BLE001 - located and recorded exactly as graphql-core does
            self.handle_field_error(raw_error, field_type, field_details_list, path)
            return None
        if not self.is_awaitable(completed):
            return completed

        async def await_completed() -> Any:
            try:
                return await completed
            except Exception as raw_error:  # noqa: BLE001 - as above
                self.handle_field_error(raw_error, field_type, field_details_list, path)
                return None

        return await_completed()

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if not self._fast_enabled:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        plan = self._plan(parent_type, grouped_field_set)
        if not any(plan.values()):
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)

        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list in grouped_field_set.items():
                fast = plan[response_name]
                if fast is not None and fast[0] == LEAF:
                    _, attr, coerce, non_null = fast
                    value = getattr(source_value, attr, Undefined)
                    if value is None and not non_null:
                        results[response_name] = None
                        continue
                    if type(value) in _PLAIN:
                        try:
                            coerced = coerce(value)
                        except Exception:  # noqa: BLE001 - executed again below, the normal way, for its error
                            coerced = None
                        if coerced is not None and coerced is not Undefined:
                            results[response_name] = coerced
                            continue
                elif fast is not None:
                    _, key, object_type, origin, field_type = fast
                    store = getattr(source_value, PREFETCH_KEY, None)
                    value = store.get(key, Undefined) if isinstance(store, dict) else Undefined
                    if value is None and not isinstance(field_type, GraphQLNonNull):
                        results[response_name] = None
                        continue
                    if isinstance(value, origin):
                        field_path = Path(path, response_name, parent_type.name)
                        result = self._complete_prefetched(
                            object_type, field_type, field_details_list, field_path, value
                        )
                        results[response_name] = result
                        if is_awaitable(result):
                            awaitable_fields.append(response_name)
                        continue
                # the normal way: resolvers, objects, and anything the fast path cannot vouch for
                result = self.execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise

        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            from graphql.pyutils import gather_with_cancel

            awaited = await gather_with_cancel(*(results[name] for name in awaitable_fields))
            results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()
