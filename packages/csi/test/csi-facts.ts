import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

/** The published CSI v1.12.0 descriptors as data (see the facts file's own notes). */
export interface CsiFacts {
  package: string;
  version: string;
  syntax: string;
  imports: string[];
  services: Record<string, Record<string, { request: string; response: string; server_streaming?: boolean; alpha?: boolean }>>;
  alpha_services: string[];
  messages: Record<string, { fields: FactField[]; oneofs: Record<string, string[]>; alpha?: boolean }>;
  enums: Record<string, Record<string, number>>;
  enum_flags: Record<string, { alpha_values?: string[]; alpha?: boolean }>;
  extensions: Record<string, { extends: string; number: number; type: string }>;
}

interface FactField {
  name: string;
  number: number;
  type: string;
  label: "optional" | "repeated" | "map";
  key_type?: string;
  value_type?: string;
  oneof?: string;
  csi_secret?: boolean;
  alpha?: boolean;
}

export const FACTS_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "csi-v1.12.0-facts.json");

export function readFacts(): CsiFacts {
  return JSON.parse(fs.readFileSync(FACTS_FILE, "utf8")) as CsiFacts;
}

/** A type's name as the facts write it: relative to csi.v1, well-known types in full, scalars as they are. */
function factName(fullName: string, pkg: string): string {
  const name = fullName.replace(/^\./, "");
  return name.startsWith(`${pkg}.`) ? name.slice(pkg.length + 1) : name;
}

function typeOf(field: protobuf.Field, pkg: string): string {
  return field.resolvedType ? factName(field.resolvedType.fullName, pkg) : field.type;
}

/** Every message and enum under `ns`, by the facts' name. */
function collect(
  ns: protobuf.NamespaceBase,
  pkg: string,
  into: { messages: Map<string, protobuf.Type>; enums: Map<string, protobuf.Enum> },
) {
  for (const nested of ns.nestedArray) {
    if (nested instanceof protobuf.Type) into.messages.set(factName(nested.fullName, pkg), nested);
    else if (nested instanceof protobuf.Enum) into.enums.set(factName(nested.fullName, pkg), nested);
    if (nested instanceof protobuf.Namespace || nested instanceof protobuf.Type) collect(nested, pkg, into);
  }
}

const flag = (options: Record<string, unknown> | undefined, name: string): boolean => options?.[`(${name})`] === true;

/**
 * Every difference between the proto (`root`, loaded from `protoText`) and the facts, one line each: names,
 * numbers, types, labels, oneofs, options, order, and anything the proto has that the facts do not.
 */
export function compareWithFacts(root: protobuf.Root, protoText: string, facts: CsiFacts): string[] {
  const out: string[] = [];
  const pkg = facts.package;
  const ns = root.lookup(pkg);
  if (!(ns instanceof protobuf.Namespace)) return [`package ${pkg} missing`];
  if (!new RegExp(`^syntax\\s*=\\s*"${facts.syntax}";`, "m").test(protoText)) out.push(`syntax is not ${facts.syntax}`);
  const imports = [...protoText.matchAll(/^import\s+"([^"]+)";/gm)].map((m) => m[1]);
  if (JSON.stringify(imports) !== JSON.stringify(facts.imports))
    out.push(`imports ${JSON.stringify(imports)}, facts ${JSON.stringify(facts.imports)}`);

  const services = ns.nestedArray.filter((n): n is protobuf.Service => n instanceof protobuf.Service);
  const same = (what: string, have: unknown, want: unknown) => {
    if (JSON.stringify(have) !== JSON.stringify(want))
      out.push(`${what}: proto ${JSON.stringify(have)}, facts ${JSON.stringify(want)}`);
  };
  same(
    "services",
    services.map((s) => s.name),
    Object.keys(facts.services),
  );
  for (const [name, rpcs] of Object.entries(facts.services)) {
    const service = services.find((s) => s.name === name);
    if (!service) continue;
    same(`service ${name} alpha`, flag(service.options, "alpha_service"), facts.alpha_services.includes(name));
    same(
      `service ${name} rpcs`,
      service.methodsArray.map((m) => m.name),
      Object.keys(rpcs),
    );
    for (const [rpc, want] of Object.entries(rpcs)) {
      const m = service.methods[rpc];
      if (!m) continue;
      m.resolve();
      same(`rpc ${name}.${rpc} request`, factName(m.resolvedRequestType?.fullName ?? m.requestType, pkg), want.request);
      same(`rpc ${name}.${rpc} response`, factName(m.resolvedResponseType?.fullName ?? m.responseType, pkg), want.response);
      same(`rpc ${name}.${rpc} server streaming`, m.responseStream === true, want.server_streaming === true);
      same(`rpc ${name}.${rpc} client streaming`, m.requestStream === true, false);
      same(`rpc ${name}.${rpc} alpha`, flag(m.options, "alpha_method"), want.alpha === true);
    }
  }

  const found = { messages: new Map<string, protobuf.Type>(), enums: new Map<string, protobuf.Enum>() };
  collect(ns, pkg, found);
  same("messages", [...found.messages.keys()].sort(), Object.keys(facts.messages).sort());
  same("enums", [...found.enums.keys()].sort(), Object.keys(facts.enums).sort());
  for (const [name, want] of Object.entries(facts.messages)) {
    const type = found.messages.get(name);
    if (!type) continue;
    same(`message ${name} alpha`, flag(type.options, "alpha_message"), want.alpha === true);
    same(
      `message ${name} fields`,
      type.fieldsArray.map((f) => f.name),
      want.fields.map((f) => f.name),
    );
    for (const w of want.fields) {
      const f = type.fields[w.name];
      if (!f) continue;
      const at = `${name}.${w.name}`;
      same(`${at} number`, f.id, w.number);
      if (w.label === "map") {
        same(`${at} label`, f instanceof protobuf.MapField ? "map" : f.repeated ? "repeated" : "optional", "map");
        if (f instanceof protobuf.MapField) {
          same(`${at} key type`, f.keyType, w.key_type);
          same(`${at} value type`, typeOf(f, pkg), w.value_type);
        }
      } else {
        same(`${at} label`, f instanceof protobuf.MapField ? "map" : f.repeated ? "repeated" : "optional", w.label);
        same(`${at} type`, typeOf(f, pkg), w.type);
      }
      same(`${at} oneof`, f.partOf?.name ?? null, w.oneof ?? null);
      same(`${at} csi_secret`, flag(f.options, "csi_secret"), w.csi_secret === true);
      same(`${at} alpha`, flag(f.options, "alpha_field"), w.alpha === true);
      same(`${at} proto3 optional keyword`, f.options?.proto3_optional === true, false);
    }
    const oneofs = Object.fromEntries(type.oneofsArray.map((o) => [o.name, o.oneof]));
    same(`message ${name} oneofs`, oneofs, want.oneofs);
  }
  for (const [name, values] of Object.entries(facts.enums)) {
    const e = found.enums.get(name);
    if (!e) continue;
    same(`enum ${name} values`, Object.entries(e.values), Object.entries(values));
    const alphaValues = Object.keys(e.values).filter((v) => flag(e.valuesOptions?.[v], "alpha_enum_value"));
    same(`enum ${name} alpha values`, alphaValues, facts.enum_flags[name]?.alpha_values ?? []);
    same(`enum ${name} alpha`, flag(e.options, "alpha_enum"), facts.enum_flags[name]?.alpha === true);
  }
  const extensions = ns.nestedArray.filter((n): n is protobuf.Field => n instanceof protobuf.Field && n.extend !== undefined);
  same("extensions", extensions.map((x) => x.name).sort(), Object.keys(facts.extensions).sort());
  for (const [name, want] of Object.entries(facts.extensions)) {
    const x = extensions.find((e) => e.name === name);
    if (!x) continue;
    same(`extension ${name}`, { extends: x.extend?.replace(/^\./, ""), number: x.id, type: x.type }, want);
  }
  return out;
}
