//! Small builders and readers for the stanzas the simulator exchanges.

use whatsapp_rust::wacore::xml::{DisplayableNode, DisplayableNodeRef};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Node, NodeRef};

pub fn xml(node: &Node) -> String {
    DisplayableNode(node).to_string()
}

pub fn xml_ref(node: &NodeRef<'_>) -> String {
    DisplayableNodeRef(node).to_string()
}

pub fn now_secs() -> u64 {
    whatsapp_rust::wacore::time::now_secs().max(0) as u64
}

/// A random upper-case hex token, for stanza ids and QR refs.
pub fn random_token(len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789ABCDEF"[usize::from(rand::random::<u8>() % 16)]))
        .collect()
}

pub fn attr(node: &NodeRef<'_>, name: &str) -> Option<String> {
    node.get_attr(name).map(|v| v.as_str().into_owned())
}

pub fn child_tags(node: &NodeRef<'_>) -> Vec<String> {
    node.children()
        .map(|c| c.iter().map(|n| n.tag.to_string()).collect())
        .unwrap_or_default()
}

/// `<iq type="result">` answering `request`, from whoever it was addressed to.
pub fn iq_result(request: &NodeRef<'_>, children: Vec<Node>) -> Node {
    let id = attr(request, "id").unwrap_or_default();
    let from = attr(request, "to").unwrap_or_else(|| "s.whatsapp.net".to_string());
    let builder =
        NodeBuilder::new("iq").attrs([("id", id), ("type", "result".to_string()), ("from", from)]);
    if children.is_empty() {
        builder.build()
    } else {
        builder.children(children).build()
    }
}

pub fn iq_error(request: &NodeRef<'_>, code: u16, text: &str) -> Node {
    let id = attr(request, "id").unwrap_or_default();
    let from = attr(request, "to").unwrap_or_else(|| "s.whatsapp.net".to_string());
    NodeBuilder::new("iq")
        .attrs([("id", id), ("type", "error".to_string()), ("from", from)])
        .children([NodeBuilder::new("error")
            .attrs([("code", code.to_string()), ("text", text.to_string())])
            .build()])
        .build()
}

/// The server's `<ack>` for a stanza the client sent.
pub fn ack_for(node: &NodeRef<'_>, class: &str) -> Option<Node> {
    let id = attr(node, "id")?;
    let mut attrs = vec![
        ("id", id),
        ("class", class.to_string()),
        ("t", now_secs().to_string()),
    ];
    if let Some(to) = attr(node, "to") {
        attrs.push(("from", to));
    }
    if let Some(kind) = attr(node, "type") {
        attrs.push(("type", kind));
    }
    Some(NodeBuilder::new("ack").attrs(attrs).build())
}

pub fn stream_error_code(code: u16) -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", code.to_string())
        .build()
}

pub fn stream_error_replaced() -> Node {
    NodeBuilder::new("stream:error")
        .children([NodeBuilder::new("conflict")
            .attr("type", "replaced")
            .build()])
        .build()
}
