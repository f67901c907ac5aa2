"""GraphiQL as Strawberry ships it, with the Headers tab also sent on websockets.

GraphiQL's fetcher sends the Headers tab with HTTP requests only; a subscription's websocket carries
`wsConnectionParams`, fixed when the fetcher is made. The gateway authenticates websockets from the
`connection_init` payload, so the page makes a fetcher per Headers value: paste
`{"Authorization": "Bearer …"}` once and queries and subscriptions both work.
"""

from __future__ import annotations

import logging

from strawberry.http.ides import get_graphql_ide_html

logger = logging.getLogger(__name__)

_STATIC_FETCHER = """      const fetcher = GraphiQL.createFetcher({
        url: fetchURL,
        headers: defaultHeaders,
        subscriptionUrl,
      });
"""
_FETCHER_PER_HEADERS = """      function fetcherFor(headersText) {
        let connectionParams = {};
        try {
          connectionParams = JSON.parse(headersText || "{}");
        } catch (error) {
          connectionParams = {};
        }
        return GraphiQL.createFetcher({
          url: fetchURL,
          headers: defaultHeaders,
          subscriptionUrl,
          wsConnectionParams: connectionParams,
        });
      }
"""
_USE_STATIC = "          fetcher: fetcher,\n"
_STATE = "        const [headers, setHeaders] = React.useState(parameters.headers);\n"
_STATE_AND_FETCHER = _STATE + "        const fetcher = React.useMemo(() => fetcherFor(headers), [headers]);\n"


def graphiql_html() -> str:
    html = get_graphql_ide_html(graphql_ide="graphiql")
    if _STATIC_FETCHER not in html or _STATE not in html or _USE_STATIC not in html:
        logger.warning("GraphiQL's page changed shape; subscriptions in GraphiQL will not carry the token")
        return html
    return html.replace(_STATIC_FETCHER, _FETCHER_PER_HEADERS).replace(_STATE, _STATE_AND_FETCHER)
