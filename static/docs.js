// Renders /openapi.json as a readable page; no dependencies, no network beyond this server.
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, value));
  children.forEach((child) => node.append(child));
  return node;
};

const refName = (schema) => (schema && schema.$ref ? schema.$ref.split("/").pop() : null);

function schemaText(schema) {
  const name = refName(schema);
  if (name) return el("a", { href: `#schema-${name}` }, name);
  if (schema && schema.oneOf) {  // "A or B": each alternative by name
    const span = el("span");
    schema.oneOf.forEach((choice, i) => span.append(i ? " or " : "", schemaText(choice)));
    return span;
  }
  if (schema && schema.type === "array" && schema.items) {
    return el("span", {}, "array of ", schemaText(schema.items));
  }
  return (schema && schema.type) || "any";
}

function parametersTable(parameters) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
    el("th", {}, "type"), el("th", {}, "description")));
  parameters.forEach((p) => table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)),
    el("td", {}, p.in), el("td", {}, schemaText(p.schema)), el("td", {}, p.description || ""))));
  return table;
}

function responsesTable(responses) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "content"),
    el("th", {}, "description")));
  Object.entries(responses).forEach(([status, response]) => {
    const content = el("td");
    Object.entries(response.content || {}).forEach(([type, media]) => {
      content.append(el("code", {}, type), " ", schemaText(media.schema), el("br"));
    });
    table.append(el("tr", {}, el("td", {}, status), content,
      el("td", {}, response.description || "")));
  });
  return table;
}

function operation(path, method, op) {
  const id = `op-${op.operationId}`;
  const section = el("section", { class: "op", id },
    el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), path),
    el("p", {}, op.summary || ""));
  if (op.parameters) section.append(parametersTable(op.parameters));
  if (op.requestBody) {
    const media = op.requestBody.content["application/json"];
    section.append(el("p", {}, "Body: ", el("code", {}, "application/json"), " ",
      schemaText(media.schema)));
  }
  section.append(responsesTable(op.responses));
  return section;
}

async function main() {
  const response = await fetch("/openapi.json");
  const spec = await response.json();
  document.getElementById("summary").textContent =
    `${spec.info.description} Version ${spec.info.version}, OpenAPI ${spec.openapi}.`;
  const toc = document.getElementById("toc");
  const operations = document.getElementById("operations");
  Object.entries(spec.paths).forEach(([path, methods]) => {
    Object.entries(methods).forEach(([method, op]) => {
      operations.append(operation(path, method, op));
      toc.append(el("li", {}, el("a", { href: `#op-${op.operationId}` },
        `${method.toUpperCase()} ${path}`)));
    });
  });
  const schemas = document.getElementById("schemas");
  Object.entries(spec.components.schemas).forEach(([name, schema]) => {
    schemas.append(el("h3", { id: `schema-${name}` }, name),
      el("pre", {}, JSON.stringify(schema, null, 2)));
  });
}

main().catch((error) => {
  document.getElementById("summary").textContent = `Could not load the API description: ${error}`;
});
