"""Thin resolvers of the root fields: GraphQL arguments in, one service call, GraphQL types out.

`schema.build` attaches them to Query, Mutation and Subscription; they import `schema` (the types they
return, the context, the errors), never the assembly.
"""
