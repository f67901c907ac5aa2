// GraphiQL as the gateway serves it: React, GraphiQL and its explorer come from /static/vendor/ (loaded
// before this file), so the page works with no outside network and under a CSP without inline scripts.
//
// GraphiQL's fetcher sends the Headers tab with HTTP requests only; a subscription's websocket carries
// `wsConnectionParams`, fixed when the fetcher is made. The gateway authenticates websockets from the
// `connection_init` payload, so the page makes a fetcher per Headers value: paste
// {"Authorization": "Bearer …"} once and queries and subscriptions both work.
(function () {
  'use strict';

  const EXAMPLE_QUERY = `# OpenCSP Gateway — GraphiQL
#
# Paste a token in the Headers tab below as {"Authorization": "Bearer …"}
# (\`opencsp-gateway token --role user\` makes one in dev mode).
#
# Run: Ctrl-Enter. Complete: Ctrl-Space.

query {
  me { name permissions }
}
`;

  const parameters = {};
  for (const [key, value] of new URLSearchParams(window.location.search)) parameters[key] = value;

  function updateURL(data) {
    Object.assign(parameters, data);
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(parameters)) if (value) search.set(key, value);
    history.replaceState(null, '', '?' + search.toString());
  }

  const fetchURL = window.location.href.split('?')[0];
  const subscriptionUrl = (function () {
    const url = new URL(fetchURL);
    url.protocol = url.protocol === 'http:' ? 'ws:' : 'wss:';
    url.hash = '';
    return url.toString();
  })();

  function fetcherFor(headersText) {
    let connectionParams = {};
    try {
      connectionParams = JSON.parse(headersText || '{}');
    } catch (error) {
      connectionParams = {};
    }
    return GraphiQL.createFetcher({
      url: fetchURL,
      subscriptionUrl,
      wsConnectionParams: connectionParams,
    });
  }

  function GraphiQLWithExplorer() {
    const [query, setQuery] = React.useState(parameters.q || EXAMPLE_QUERY);
    const [variables, setVariables] = React.useState(parameters.variables);
    const [headers, setHeaders] = React.useState(parameters.headers);
    const fetcher = React.useMemo(() => fetcherFor(headers), [headers]);
    const explorer = React.useMemo(() => GraphiQLPluginExplorer.explorerPlugin(), []);
    return React.createElement(GraphiQL, {
      fetcher,
      defaultEditorToolsVisibility: true,
      plugins: [explorer],
      query,
      variables,
      headers,
      onEditQuery(value) {
        setQuery(value);
        updateURL({ q: value });
      },
      onEditVariables(value) {
        setVariables(value);
        updateURL({ variables: value });
      },
      onEditHeaders: setHeaders,
      inputValueDeprecation: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
    });
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(React.createElement(GraphiQLWithExplorer));
})();
