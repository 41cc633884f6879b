// The submit form, generated from the JSON Schema of each job type's params
// (GET /api/v1/job-types), with the server's 422 errors shown beside their fields.

import { API, ApiError, api, idempotencyKey } from "./api.js";
import { $, el, shortId } from "./dom.js";

const OPTIONS = ["priority", "timeout", "max_attempts"];

/** Follow a local $ref and unwrap Optional (anyOf [X, null]); returns [schema, nullable]. */
function resolve(schema, root) {
  let current = schema || {};
  let nullable = false;
  for (let depth = 0; depth < 8; depth += 1) {
    if (current.$ref && current.$ref.startsWith("#/")) {
      const target = current.$ref.slice(2).split("/").reduce((node, key) => node && node[key], root);
      current = { ...target, ...current, $ref: undefined };
      continue;
    }
    const choices = current.anyOf || current.oneOf;
    if (Array.isArray(choices)) {
      const real = choices.filter((c) => c.type !== "null");
      nullable = nullable || real.length < choices.length;
      if (real.length === 1) {
        current = { ...real[0], ...current, anyOf: undefined, oneOf: undefined };
        continue;
      }
    }
    if (Array.isArray(current.allOf) && current.allOf.length === 1) {
      current = { ...current.allOf[0], ...current, allOf: undefined };
      continue;
    }
    break;
  }
  if (Array.isArray(current.type)) {
    nullable = nullable || current.type.includes("null");
    const real = current.type.filter((t) => t !== "null");
    current = { ...current, type: real.length === 1 ? real[0] : undefined };
  }
  return [current, nullable];
}

/** How one property is edited and read back. */
function kindOf(schema) {
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.type === "integer" || schema.type === "number") return schema.type;
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "string") return "string";
  return "json";  // objects, arrays and anything without a single type
}

function rangeText(schema) {
  const low = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? `>${schema.exclusiveMinimum}` : null);
  const high = schema.maximum ?? (schema.exclusiveMaximum !== undefined ? `<${schema.exclusiveMaximum}` : null);
  if (low !== null && high !== null) return `${low} to ${high}`;
  if (low !== null) return `at least ${low}`.replace("at least >", "more than ");
  if (high !== null) return `at most ${high}`.replace("at most <", "less than ");
  return "";
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** One generated field: its input, its error slot, and how to read its value. */
class Field {
  constructor(name, schema, required, root) {
    const [resolved, nullable] = resolve(schema, root);
    this.name = name;
    this.schema = resolved;
    this.kind = kindOf(resolved);
    this.nullable = nullable;
    this.required = required;
    this.id = `param-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    this.node = this.build();
    this.reset();
  }

  build() {
    const s = this.schema;
    const hintId = `${this.id}-hint`;
    const errorId = `${this.id}-error`;
    const described = `${hintId} ${errorId}`;
    const common = { id: this.id, name: this.name, "aria-describedby": described,
      "aria-required": this.required ? "true" : false };
    if (this.kind === "enum") {
      this.input = el("select", common,
        ...s.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
    } else if (this.kind === "boolean") {
      this.input = el("input", { ...common, type: "checkbox" });
    } else if (this.kind === "integer" || this.kind === "number") {
      this.input = el("input", { ...common, type: "number",
        step: this.kind === "integer" ? "1" : "any",
        inputmode: this.kind === "integer" ? "numeric" : "decimal",
        min: s.minimum ?? false, max: s.maximum ?? false });
    } else if (this.kind === "string") {
      const long = (s.maxLength || 0) > 200 || s.format === "textarea";
      this.input = el(long ? "textarea" : "input", { ...common,
        type: long ? false : "text", minlength: s.minLength ?? false,
        maxlength: s.maxLength ?? false, spellcheck: "false" });
    } else {
      this.input = el("textarea", { ...common, rows: 3, spellcheck: "false",
        class: "mono" });
    }
    const hintParts = [s.description && capitalise(s.description)];
    if (this.kind === "integer" || this.kind === "number") hintParts.push(rangeText(s));
    if (this.kind === "json") hintParts.push("JSON");
    this.error = el("p", { id: errorId, class: "field-error", hidden: true });
    const label = el("label", { for: this.id }, s.title || this.name,
      this.required ? el("span", { class: "required" }, " (required)") : null);
    const hint = el("p", { id: hintId, class: "hint" },
      hintParts.filter(Boolean).join(" · "));
    if (this.kind === "boolean") {
      return el("div", { class: "field field-check" },
        el("div", { class: "check" }, this.input, label), hint, this.error);
    }
    return el("div", { class: "field" }, label, this.input, hint, this.error);
  }

  reset() {
    const value = this.schema.default;
    if (this.kind === "boolean") this.input.checked = Boolean(value);
    else if (this.kind === "enum") {
      this.input.value = value === undefined ? this.input.options[0].value : JSON.stringify(value);
    } else if (this.kind === "json") {
      this.input.value = value === undefined ? "" : JSON.stringify(value, null, 1);
    } else this.input.value = value === undefined || value === null ? "" : String(value);
  }

  /** [value, clientError]; value undefined means "leave it out, the server's default". */
  read() {
    const raw = this.input.value;
    switch (this.kind) {
      case "boolean":
        return [this.input.checked, null];
      case "enum":
        return [JSON.parse(raw), null];
      case "integer":
      case "number":
        if (this.input.validity.badInput) return [undefined, "Enter a number."];
        return raw.trim() === "" ? [undefined, null] : [Number(raw), null];
      case "string":
        return raw === "" && !this.required && this.schema.default === undefined
          ? [undefined, null] : [raw, null];
      default:
        if (raw.trim() === "") return [undefined, null];
        try {
          return [JSON.parse(raw), null];
        } catch {
          return [undefined, "This is not valid JSON."];
        }
    }
  }
}

/** A field of the form that is not generated (type and the scheduling options). */
class FixedField {
  constructor(id, kind) {
    this.input = $(id);
    this.error = $(`${id}-error`);
    this.kind = kind;
  }

  read() {
    if (this.input.validity.badInput) return [undefined, "Enter a number."];
    const raw = this.input.value.trim();
    return raw === "" ? [undefined, null] : [Number(raw), null];
  }
}

export class SubmitForm {
  constructor({ onSubmitted }) {
    this.onSubmitted = onSubmitted;
    this.form = $("submit-form");
    this.select = $("job-type");
    this.types = new Map();
    this.fields = new Map();  // error field name ("params.seconds") -> Field
    this.options = Object.fromEntries(OPTIONS.map((name) => [name,
      new FixedField(`opt-${name}`, "number")]));
    this.select.addEventListener("change", () => this.showType(this.select.value));
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    $("reset-button").addEventListener("click", () => this.showType(this.select.value));
  }

  async load() {
    const { job_types: types } = await api(`${API}/job-types`);
    this.types = new Map(types.map((t) => [t.name, t]));
    this.select.replaceChildren(...types.map((t) => el("option", { value: t.name }, t.name)));
    this.select.disabled = types.length === 0;
    $("submit-button").disabled = types.length === 0;
    if (types.length) this.showType(types[0].name);
  }

  showType(name) {
    const type = this.types.get(name);
    if (!type) return;
    this.select.value = name;
    this.clearErrors();
    $("job-type-hint").textContent = type.description || "";
    const schema = type.params_schema || {};
    const required = new Set(schema.required || []);
    this.fields = new Map();
    const nodes = Object.entries(schema.properties || {}).map(([prop, propSchema]) => {
      const field = new Field(prop, propSchema, required.has(prop), schema);
      this.fields.set(`params.${prop}`, field);
      return field.node;
    });
    $("params").hidden = nodes.length === 0;
    $("params-fields").replaceChildren(...nodes);
    for (const name of OPTIONS) this.options[name].input.value = "";
    this.options.timeout.input.placeholder = String(type.defaults.timeout);
    this.options.max_attempts.input.placeholder = String(type.defaults.max_attempts);
  }

  /** The request body, or null when a field cannot be read (its error is shown). */
  body() {
    const params = {};
    const body = { type: this.select.value, params };
    const problems = [];
    for (const [key, field] of this.fields) {
      const [value, error] = field.read();
      if (error) problems.push({ field: key, message: error });
      else if (value !== undefined) params[key.slice("params.".length)] = value;
    }
    for (const name of OPTIONS) {
      const [value, error] = this.options[name].read();
      if (error) problems.push({ field: name, message: error });
      else if (value !== undefined) body[name] = value;
    }
    if (problems.length) {
      this.showErrors(problems, "Some fields need attention.");
      return null;
    }
    return body;
  }

  async submit() {
    this.clearErrors();
    const body = this.body();
    if (!body) return;
    const button = $("submit-button");
    button.disabled = true;
    $("submit-status").textContent = "Submitting…";
    try {
      const job = await api(`${API}/jobs`, { method: "POST", body,
        headers: { "Idempotency-Key": idempotencyKey() } });
      $("submit-status").textContent = `Submitted ${job.type} job ${shortId(job.id)}.`;
      this.onSubmitted(job);
    } catch (error) {
      $("submit-status").textContent = "";
      if (error instanceof ApiError && error.fieldErrors.length) {
        this.showErrors(error.fieldErrors, error.message);
      } else {
        this.showErrors([], error.message);
      }
    } finally {
      button.disabled = false;
    }
  }

  /** Show each {field, message} beside its input; the rest above the buttons. */
  showErrors(errors, summary) {
    const unplaced = [];
    let first = null;
    for (const { field, message } of errors) {
      const target = this.targetOf(field);
      if (!target) {
        unplaced.push(field && field !== "body" ? `${field}: ${message}` : message);
        continue;
      }
      target.error.hidden = false;
      target.error.textContent = target.error.textContent
        ? `${target.error.textContent} ${message}` : message;
      target.input.setAttribute("aria-invalid", "true");
      if (OPTIONS.includes(field)) $("options").open = true;
      first = first || target.input;
    }
    const box = $("form-error");
    box.replaceChildren(el("p", {}, summary || "The job was not accepted."),
      ...(unplaced.length ? [el("ul", {}, ...unplaced.map((m) => el("li", {}, m)))] : []));
    box.hidden = false;
    (first || box).focus?.();
  }

  targetOf(field) {
    if (!field) return null;
    if (field === "type") return { input: this.select, error: $("job-type-error") };
    if (OPTIONS.includes(field)) return this.options[field];
    // "params.items.0" belongs to the "params.items" field.
    for (let key = field; key.includes("."); key = key.slice(0, key.lastIndexOf("."))) {
      if (this.fields.has(key)) return this.fields.get(key);
    }
    return null;
  }

  clearErrors() {
    for (const node of this.form.querySelectorAll(".field-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of this.form.querySelectorAll("[aria-invalid]")) {
      node.removeAttribute("aria-invalid");
    }
    $("form-error").hidden = true;
    $("form-error").replaceChildren();
  }
}
