//! `mcpgate-broker demo-server`: a small stdio MCP server for the quickstart.
//!
//! It plays a customer database so that every feature of the gateway has
//! something to bite on: the records carry what masking must catch (card
//! numbers that pass the Luhn check, US social security numbers in valid
//! ranges, e-mail addresses, phone numbers), `drop_table` is the destructive
//! call a policy should deny or hold, and the database "password" comes
//! from the environment the broker gives it, never from the user. All data
//! is generated from a fixed seed: no external data, same records on every
//! run. It speaks both MCP generations: the `initialize` handshake and the
//! stateless `server/discover` with `_meta` on each request.
//!
//! stdout carries JSON-RPC only, one message per line; diagnostics go to
//! stderr.

use std::io::{self, BufRead, Write};

use mcpgate_shared::jsonrpc::{
    DEFAULT_MAX_MESSAGE_BYTES, INVALID_PARAMS, Id, Kind, METHOD_NOT_FOUND, Message, error_line,
    too_large,
};
use mcpgate_shared::mcp;
use mcpgate_shared::secret::Secret;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The environment variable holding the demo database's credential.
pub const CREDENTIAL_ENV: &str = "DEMO_DB_PASSWORD";
/// `serverInfo.name`.
pub const SERVER_NAME: &str = "mcpgate-demo";
/// How many customers the demo database holds (ids 1 to this).
pub const CUSTOMERS: u32 = 50;
/// Where a stateless (`2026-07-28`) request names its protocol version.
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const INSTRUCTIONS: &str = "A demo customer database with fake, generated records. \
    Use list_customers, get_customer and search_customers to read; update_customer writes; drop_table is destructive.";
const SEED: u64 = 0x6d63_7067_6174_6531;

/// Runs the server on stdin/stdout until stdin ends.
pub fn run() -> anyhow::Result<()> {
    let credential = std::env::var(CREDENTIAL_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new);
    if credential.is_some() {
        eprintln!("{SERVER_NAME}: connected to the demo database");
    } else {
        eprintln!("{SERVER_NAME}: {CREDENTIAL_ENV} is not set; tool calls will fail");
    }
    let server = DemoServer::new(credential);
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut line = Vec::new();
    loop {
        let reply = match read_line(&mut input, &mut line, DEFAULT_MAX_MESSAGE_BYTES)? {
            Line::End => return Ok(()),
            Line::Oversized => Some(too_large(DEFAULT_MAX_MESSAGE_BYTES).to_line()),
            Line::Text => server.handle_line(&line),
        };
        if let Some(reply) = reply {
            let written = output.write_all(&reply).and_then(|()| output.flush());
            match written {
                // The client went away: nothing left to serve.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                other => other?,
            }
        }
    }
}

enum Line {
    Text,
    Oversized,
    End,
}

/// Reads one line into `buf` (without its newline), keeping at most `limit`
/// bytes: a longer line is skipped to its newline.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
    buf.clear();
    let mut oversized = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (oversized, buf.is_empty()) {
                (true, _) => Line::Oversized,
                (false, true) => Line::End,
                (false, false) => Line::Text,
            });
        }
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if !oversized && buf.len() + part.len() > limit {
            oversized = true;
            buf.clear();
        }
        if !oversized {
            buf.extend_from_slice(part);
        }
        input.consume(used);
        if done {
            return Ok(if oversized {
                Line::Oversized
            } else {
                Line::Text
            });
        }
    }
}

/// The request handling, without I/O.
#[derive(Debug)]
pub struct DemoServer {
    credential: Option<Secret<String>>,
}

impl DemoServer {
    /// `credential` is the database password; without one every tool call
    /// fails, as a real database server would.
    pub fn new(credential: Option<Secret<String>>) -> Self {
        Self { credential }
    }

    /// Answers one line: `None` for blank lines, notifications and
    /// responses.
    pub fn handle_line(&self, line: &[u8]) -> Option<Vec<u8>> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match Message::parse(line) {
            Ok(msg) => self.handle(&msg),
            Err(rejection) => Some(rejection.to_line()),
        }
    }

    /// Answers one message: a response line for a request, `None` for
    /// anything else.
    pub fn handle(&self, msg: &Message) -> Option<Vec<u8>> {
        let Kind::Request { id, method } = msg.kind() else {
            return None;
        };
        let params = msg.params();
        let stateless = params
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            == Some(mcp::STATELESS_VERSION);
        let outcome = match method.as_str() {
            mcp::INITIALIZE => Ok(initialize(params)),
            mcp::SERVER_DISCOVER => Ok(discover()),
            mcp::PING => Ok(json!({})),
            mcp::TOOLS_LIST => Ok(json!({ "tools": tools() })),
            mcp::TOOLS_CALL => self.call(params),
            other => Err((METHOD_NOT_FOUND, format!("method not found: {other}"))),
        };
        Some(match outcome {
            Ok(mut result) => {
                // The stateless generation tags every result as complete.
                if (stateless || method == mcp::SERVER_DISCOVER)
                    && let Value::Object(fields) = &mut result
                {
                    fields.insert("resultType".into(), "complete".into());
                    // 2026-07-28 list results carry cache hints; the
                    // gateway will filter lists per role, so never cache
                    // them across users.
                    if method == mcp::TOOLS_LIST {
                        fields.insert("ttlMs".into(), 0.into());
                        fields.insert("cacheScope".into(), "private".into());
                    }
                }
                result_line(id, result)
            }
            Err((code, message)) => error_line(Some(id), code, &message, None),
        })
    }

    fn call(&self, params: Option<&Map<String, Value>>) -> Result<Value, (i64, String)> {
        let name = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| (INVALID_PARAMS, "tools/call needs a tool name".to_owned()))?;
        let tool = Tool::from_name(name)
            .ok_or_else(|| (INVALID_PARAMS, format!("unknown tool: {name}")))?;
        let empty = Map::new();
        let args = match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(args)) => args,
            Some(_) => return Ok(tool_error("arguments must be an object")),
        };
        if self.credential.is_none() {
            return Ok(tool_error("database credential not configured"));
        }
        Ok(match tool.run(args) {
            Ok(structured) => tool_result(structured),
            Err(message) => tool_error(&message),
        })
    }
}

fn result_line(id: &Id, result: Value) -> Vec<u8> {
    let response = json!({ "jsonrpc": "2.0", "id": Value::from(id), "result": result });
    // Serialising a `Value` cannot fail.
    let mut line = serde_json::to_vec(&response).unwrap_or_default();
    line.push(b'\n');
    line
}

fn server_info() -> Value {
    json!({
        "name": SERVER_NAME,
        "title": "mcpgate demo customer database",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The handshake era: answer with the client's version if it is one we
/// speak, else with the newest handshake version (the client then decides).
fn initialize(params: Option<&Map<String, Value>>) -> Value {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let version = match requested {
        Some(v) if mcp::is_known_version(v) && v != mcp::STATELESS_VERSION => v,
        _ => mcp::LATEST_HANDSHAKE_VERSION,
    };
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

/// The stateless generation's discovery: every version this server speaks
/// (it is dual-era), its capabilities and identity.
fn discover() -> Value {
    json!({
        "supportedVersions": mcp::PROTOCOL_VERSIONS,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

/// A successful tool result: the JSON text and the structured value are
/// the same data, so masking one must keep them consistent.
fn tool_result(structured: Value) -> Value {
    json!({
        "content": [{ "type": "text", "text": structured.to_string() }],
        "structuredContent": structured,
        "isError": false,
    })
}

fn tool_error(message: &str) -> Value {
    json!({
        "content": [{ "type": "text", "text": message }],
        "isError": true,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    ListCustomers,
    GetCustomer,
    SearchCustomers,
    UpdateCustomer,
    DropTable,
}

impl Tool {
    const ALL: [Tool; 5] = [
        Tool::ListCustomers,
        Tool::GetCustomer,
        Tool::SearchCustomers,
        Tool::UpdateCustomer,
        Tool::DropTable,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::ListCustomers => "list_customers",
            Tool::GetCustomer => "get_customer",
            Tool::SearchCustomers => "search_customers",
            Tool::UpdateCustomer => "update_customer",
            Tool::DropTable => "drop_table",
        }
    }

    fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    fn describe(self) -> Value {
        let read_only = json!({ "readOnlyHint": true, "openWorldHint": false });
        let (title, description, properties, required, annotations) = match self {
            Tool::ListCustomers => (
                "List customers",
                "List customer records (name, e-mail, phone, card number, SSN, city).",
                json!({ "limit": {
                    "type": "integer", "minimum": 1, "maximum": CUSTOMERS, "default": 10,
                    "description": "How many customers to return",
                } }),
                json!([]),
                read_only,
            ),
            Tool::GetCustomer => (
                "Get a customer",
                "Get one customer record by id.",
                json!({ "id": {
                    "type": "integer", "minimum": 1, "maximum": CUSTOMERS,
                    "description": "The customer id",
                } }),
                json!(["id"]),
                read_only,
            ),
            Tool::SearchCustomers => (
                "Search customers",
                "Find customers whose name, e-mail or city contains the query (case-insensitive).",
                json!({ "query": { "type": "string", "minLength": 1, "maxLength": 200 } }),
                json!(["query"]),
                read_only,
            ),
            Tool::UpdateCustomer => (
                "Update a customer",
                "Change a customer's e-mail, phone or city. A write (in this demo nothing is really stored).",
                json!({
                    "id": { "type": "integer", "minimum": 1, "maximum": CUSTOMERS },
                    "email": { "type": "string", "maxLength": 200 },
                    "phone": { "type": "string", "maxLength": 40 },
                    "city": { "type": "string", "maxLength": 100 },
                }),
                json!(["id"]),
                json!({
                    "readOnlyHint": false, "destructiveHint": false,
                    "idempotentHint": true, "openWorldHint": false,
                }),
            ),
            Tool::DropTable => (
                "Drop a table",
                "Drop a table from the database. Destructive (in this demo nothing is really dropped).",
                json!({ "table": { "type": "string", "description": "The table to drop" } }),
                json!(["table"]),
                json!({
                    "readOnlyHint": false, "destructiveHint": true,
                    "idempotentHint": false, "openWorldHint": false,
                }),
            ),
        };
        json!({
            "name": self.name(),
            "title": title,
            "description": description,
            "inputSchema": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            },
            "annotations": annotations,
        })
    }

    /// Runs the tool; `Err` is a message for an `isError` result.
    fn run(self, args: &Map<String, Value>) -> Result<Value, String> {
        let allowed: &[&str] = match self {
            Tool::ListCustomers => &["limit"],
            Tool::GetCustomer => &["id"],
            Tool::SearchCustomers => &["query"],
            Tool::UpdateCustomer => &["id", "email", "phone", "city"],
            Tool::DropTable => &["table"],
        };
        if let Some(unknown) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("unknown argument {unknown:?} for {}", self.name()));
        }
        match self {
            Tool::ListCustomers => {
                let limit = match args.get("limit") {
                    None => 10,
                    Some(v) => customer_id(v)
                        .ok_or_else(|| format!("limit must be an integer from 1 to {CUSTOMERS}"))?,
                };
                let customers: Vec<Customer> = (1..=limit).map(customer).collect();
                Ok(json!({ "customers": customers, "count": customers.len() }))
            }
            Tool::GetCustomer => {
                let id = args.get("id").ok_or("id is required")?;
                let id = id.as_u64().ok_or("id must be a positive integer")?;
                match u32::try_from(id).ok().and_then(customer_id_checked) {
                    Some(id) => Ok(json!({ "customer": customer(id) })),
                    None => Err(format!("no customer with id {id}")),
                }
            }
            Tool::SearchCustomers => {
                let query = args
                    .get("query")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|q| !q.is_empty() && q.chars().count() <= 200)
                    .ok_or("query must be a non-empty string of at most 200 characters")?
                    .to_lowercase();
                let customers: Vec<Customer> = (1..=CUSTOMERS)
                    .map(customer)
                    .filter(|c| {
                        [&c.name, &c.email, &c.city]
                            .iter()
                            .any(|field| field.to_lowercase().contains(&query))
                    })
                    .collect();
                Ok(json!({ "customers": customers, "count": customers.len() }))
            }
            Tool::UpdateCustomer => {
                let id = args
                    .get("id")
                    .and_then(Value::as_u64)
                    .ok_or("id must be a positive integer")?;
                let id = u32::try_from(id)
                    .ok()
                    .and_then(customer_id_checked)
                    .ok_or_else(|| format!("no customer with id {id}"))?;
                let mut c = customer(id);
                for (field, slot, max) in [
                    ("email", &mut c.email, 200),
                    ("phone", &mut c.phone, 40),
                    ("city", &mut c.city, 100),
                ] {
                    if let Some(v) = args.get(field) {
                        let v = v
                            .as_str()
                            .filter(|v| !v.trim().is_empty() && v.chars().count() <= max)
                            .ok_or_else(|| {
                                format!(
                                    "{field} must be a non-empty string of at most {max} characters"
                                )
                            })?;
                        *slot = v.to_owned();
                    }
                }
                Ok(json!({
                    "customer": c,
                    "updated": true,
                    "note": "demo server: the change was not really stored",
                }))
            }
            Tool::DropTable => {
                let table = args
                    .get("table")
                    .and_then(Value::as_str)
                    .filter(|t| is_identifier(t))
                    .ok_or("table must be a table name (letters, digits, _; at most 63)")?;
                Ok(json!({
                    "table": table,
                    "dropped": true,
                    "note": format!("demo server: table {table} was not really dropped"),
                }))
            }
        }
    }
}

fn tools() -> Vec<Value> {
    Tool::ALL.into_iter().map(Tool::describe).collect()
}

fn customer_id(v: &Value) -> Option<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .and_then(customer_id_checked)
}

fn customer_id_checked(id: u32) -> Option<u32> {
    (1..=CUSTOMERS).contains(&id).then_some(id)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One fake customer record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub id: u32,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub card_number: String,
    pub ssn: String,
    pub city: String,
}

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Maria",
    "Wei",
    "Priya",
    "Ahmed",
    "Fatima",
    "Kenji",
    "Aiko",
    "Olga",
    "Dmitri",
    "Amara",
    "Kwame",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Nguyen",
    "Patel",
    "Chen",
    "Kim",
    "Okafor",
    "Ivanova",
    "Tanaka",
    "Haddad",
    "Mensah",
];
const CITIES: &[(&str, &str)] = &[
    ("New York", "212"),
    ("Chicago", "312"),
    ("San Francisco", "415"),
    ("Austin", "512"),
    ("Boston", "617"),
    ("Seattle", "206"),
    ("Denver", "303"),
    ("Atlanta", "404"),
    ("Las Vegas", "702"),
    ("Miami", "305"),
    ("Portland", "503"),
    ("Phoenix", "602"),
];
const DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];

/// The customer with this id; the same id always gives the same record.
pub fn customer(id: u32) -> Customer {
    let mut rng = Rng::new(SEED ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let (city, area) = *rng.pick(CITIES);
    let domain = rng.pick(DOMAINS);
    Customer {
        id,
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}{id}@{domain}",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        // 555-0100 to 555-0199 are reserved for fiction.
        phone: format!("+1 ({area}) 555-01{:02}", rng.below(100)),
        card_number: card_number(&mut rng),
        ssn: ssn(&mut rng),
        city: city.to_owned(),
    }
}

/// A Visa, Mastercard or Amex number with a valid Luhn check digit, grouped
/// the way it is printed.
fn card_number(rng: &mut Rng) -> String {
    let (prefix, len, groups): (Vec<u8>, usize, &[usize]) = match rng.below(3) {
        0 => (vec![4], 16, &[4, 4, 4, 4]),
        1 => (vec![5, 1 + rng.below(5) as u8], 16, &[4, 4, 4, 4]),
        _ => (
            vec![3, if rng.below(2) == 0 { 4 } else { 7 }],
            15,
            &[4, 6, 5],
        ),
    };
    let mut digits = prefix;
    while digits.len() < len - 1 {
        digits.push(rng.below(10) as u8);
    }
    digits.push(luhn_check_digit(&digits));
    let mut out = String::with_capacity(len + groups.len());
    let mut rest = &digits[..];
    for (i, &g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let (group, tail) = rest.split_at(g);
        out.extend(group.iter().map(|d| char::from(b'0' + d)));
        rest = tail;
    }
    out
}

/// The digit that makes `payload` followed by it pass the Luhn check.
fn luhn_check_digit(payload: &[u8]) -> u8 {
    // Counting from the right of the final number, the check digit is
    // position 0, so the payload's last digit is doubled.
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| luhn_term(d, i % 2 == 0))
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn luhn_term(digit: u8, doubled: bool) -> u32 {
    let d = u32::from(digit);
    match (doubled, d * 2) {
        (false, _) => d,
        (true, twice) if twice > 9 => twice - 9,
        (true, twice) => twice,
    }
}

/// A US SSN in the ranges the SSA issues: area 001-899 except 666, group
/// 01-99, serial 0001-9999.
fn ssn(rng: &mut Rng) -> String {
    let mut area = 1 + rng.below(899);
    if area == 666 {
        area = 667;
    }
    let group = 1 + rng.below(99);
    let serial = 1 + rng.below(9999);
    format!("{area:03}-{group:02}-{serial:04}")
}

/// splitmix64: tiny, seeded, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (the modulo bias is irrelevant for fake data).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use mcpgate_shared::jsonrpc::INVALID_REQUEST;

    use super::*;

    const PASSWORD: &str = "demo-pa55word-not-for-output";

    fn server() -> DemoServer {
        DemoServer::new(Some(Secret::new(PASSWORD.to_owned())))
    }

    /// Sends one request line and returns the parsed response.
    fn ask(server: &DemoServer, line: &str) -> Value {
        let reply = server.handle_line(line.as_bytes()).expect("a response");
        assert!(reply.ends_with(b"\n"));
        assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = String::from_utf8(reply).unwrap();
        assert!(!text.contains(PASSWORD), "credential leaked: {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn call(server: &DemoServer, tool: &str, args: Value) -> Value {
        let req = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": tool, "arguments": args },
        });
        ask(server, &req.to_string())
    }

    fn ssn_parts(ssn: &str) -> (u32, u32, u32) {
        let parts: Vec<u32> = ssn.split('-').map(|p| p.parse().unwrap()).collect();
        assert_eq!(
            ssn.split('-').map(str::len).collect::<Vec<_>>(),
            [3, 2, 4],
            "{ssn}"
        );
        (parts[0], parts[1], parts[2])
    }

    #[test]
    fn every_card_passes_luhn_and_every_ssn_is_in_an_issued_range() {
        let mut brands = std::collections::BTreeSet::new();
        for c in (1..=CUSTOMERS).map(customer) {
            assert!(
                crate::mask::validate::luhn(&c.card_number),
                "{}",
                c.card_number
            );
            let digits = c.card_number.replace(' ', "");
            match &digits[..1] {
                "4" | "5" => assert_eq!(digits.len(), 16),
                "3" => assert_eq!(digits.len(), 15),
                other => panic!("unexpected brand {other}"),
            }
            brands.insert(digits[..1].to_owned());
            let (area, group, serial) = ssn_parts(&c.ssn);
            assert!((1..=899).contains(&area) && area != 666, "{}", c.ssn);
            assert!((1..=99).contains(&group), "{}", c.ssn);
            assert!((1..=9999).contains(&serial), "{}", c.ssn);
            assert!(c.email.contains('@') && c.email.contains(&c.id.to_string()));
            assert!(c.phone.contains("555-01"), "{}", c.phone);
        }
        assert_eq!(brands.len(), 3, "all three card brands appear");
    }

    #[test]
    fn records_are_deterministic_and_distinct() {
        assert_eq!(customer(7), customer(7));
        assert_ne!(customer(7), customer(8));
        let cards: std::collections::BTreeSet<_> =
            (1..=CUSTOMERS).map(|i| customer(i).card_number).collect();
        assert_eq!(cards.len(), CUSTOMERS as usize);
    }

    #[test]
    fn initialize_negotiates_a_handshake_version() {
        let s = server();
        let init = |v: &str| {
            let req = json!({"jsonrpc":"2.0","id":0,"method":"initialize",
                "params":{"protocolVersion": v, "capabilities": {}, "clientInfo": {"name":"t","version":"1"}}});
            ask(&s, &req.to_string())
        };
        let r = init("2025-03-26");
        assert_eq!(r["id"], 0);
        assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(r["result"]["serverInfo"]["name"], SERVER_NAME);
        assert!(r["result"]["capabilities"]["tools"].is_object());
        // The stateless generation has no initialize; unknown versions get
        // our newest handshake version.
        for v in [mcp::STATELESS_VERSION, "1999-01-01"] {
            assert_eq!(
                init(v)["result"]["protocolVersion"],
                mcp::LATEST_HANDSHAKE_VERSION
            );
        }
        assert!(
            s.handle_line(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .is_none()
        );
        assert_eq!(
            ask(&s, r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#)["result"],
            json!({})
        );
    }

    #[test]
    fn discover_and_stateless_requests_are_answered() {
        let s = server();
        let meta = json!({ "_meta": { META_PROTOCOL_VERSION: mcp::STATELESS_VERSION } });
        let r = ask(
            &s,
            &json!({"jsonrpc":"2.0","id":"d","method":"server/discover","params": meta})
                .to_string(),
        );
        let result = &r["result"];
        assert_eq!(result["resultType"], "complete");
        assert!(
            result["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!(mcp::STATELESS_VERSION))
        );
        assert_eq!(result["serverInfo"]["name"], SERVER_NAME);
        assert!(result["capabilities"]["tools"].is_object());
        // A stateless tools/list carries resultType; a handshake-era one not.
        let r = ask(
            &s,
            &json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params": meta}).to_string(),
        );
        assert_eq!(r["result"]["resultType"], "complete");
        assert_eq!(r["result"]["cacheScope"], "private");
        assert_eq!(r["result"]["ttlMs"], 0);
        let r = ask(&s, r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
        assert!(r["result"].get("resultType").is_none());
    }

    #[test]
    fn tools_list_marks_drop_table_destructive() {
        let r = ask(
            &server(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        );
        let tools = r["result"]["tools"].as_array().unwrap();
        let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "list_customers",
                "get_customer",
                "search_customers",
                "update_customer",
                "drop_table"
            ]
        );
        for t in tools {
            let destructive = t["annotations"]["destructiveHint"] == true;
            assert_eq!(destructive, t["name"] == "drop_table", "{t}");
            assert_eq!(t["inputSchema"]["type"], "object");
        }
    }

    #[test]
    fn tool_results_carry_consistent_text_and_structured_content() {
        let s = server();
        for (tool, args) in [
            ("list_customers", json!({"limit": 3})),
            ("get_customer", json!({"id": 2})),
            ("search_customers", json!({"query": "a"})),
            ("update_customer", json!({"id": 3, "city": "Lyon"})),
            ("drop_table", json!({"table": "customers"})),
        ] {
            let r = call(&s, tool, args);
            let result = &r["result"];
            assert_eq!(result["isError"], false, "{tool}: {r}");
            let text = result["content"][0]["text"].as_str().unwrap();
            assert_eq!(result["content"][0]["type"], "text");
            let parsed: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, result["structuredContent"], "{tool}");
        }
        let r = call(&s, "list_customers", json!({"limit": 3}));
        assert_eq!(
            r["result"]["structuredContent"]["customers"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let first = customer(1);
        assert_eq!(
            r["result"]["structuredContent"]["customers"][0]["ssn"],
            first.ssn
        );
        let r = call(
            &s,
            "search_customers",
            json!({"query": first.email.to_uppercase()}),
        );
        assert_eq!(r["result"]["structuredContent"]["customers"][0]["id"], 1);
    }

    #[test]
    fn bad_arguments_give_an_is_error_result() {
        let s = server();
        for (tool, args) in [
            ("list_customers", json!({"limit": 0})),
            ("list_customers", json!({"limit": "ten"})),
            ("list_customers", json!({"limit": 5, "extra": true})),
            ("get_customer", json!({})),
            ("get_customer", json!({"id": 9999})),
            ("get_customer", json!({"id": -1})),
            ("search_customers", json!({"query": "  "})),
            ("drop_table", json!({"table": "x; DROP TABLE y"})),
            ("drop_table", json!([1])),
        ] {
            let r = call(&s, tool, args.clone());
            assert_eq!(r["result"]["isError"], true, "{tool} {args}: {r}");
            assert!(r["result"]["content"][0]["text"].is_string());
        }
    }

    #[test]
    fn unknown_tools_and_methods_are_json_rpc_errors() {
        let s = server();
        let r = call(&s, "format_disk", json!({}));
        assert_eq!(r["error"]["code"], INVALID_PARAMS);
        let r = ask(
            &s,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        );
        assert_eq!(r["error"]["code"], INVALID_PARAMS);
        let r = ask(&s, r#"{"jsonrpc":"2.0","id":5,"method":"resources/list"}"#);
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            (json!(5), json!(METHOD_NOT_FOUND))
        );
        let r = ask(&s, r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!(r["error"]["code"], INVALID_REQUEST);
        // Responses are not answered.
        assert!(
            s.handle_line(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
                .is_none()
        );
        assert!(s.handle_line(b"   ").is_none());
    }

    #[test]
    fn without_the_credential_tools_fail_and_nothing_leaks() {
        let s = DemoServer::new(None);
        let r = call(&s, "list_customers", json!({}));
        assert_eq!(r["result"]["isError"], true);
        assert_eq!(
            r["result"]["content"][0]["text"],
            "database credential not configured"
        );
        // With it, no answer to any request ever contains it (checked in
        // `ask` for every test above); its Debug form is redacted too.
        assert!(!format!("{:?}", server()).contains(PASSWORD));
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let mut input = io::Cursor::new(b"0123456789\nshort\nlast".to_vec());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::Oversized
        ));
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::Text
        ));
        assert_eq!(buf, b"short");
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::Text
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::End
        ));
    }
}
