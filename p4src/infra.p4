/* FlexNet Lab: program 'infra' as P4_16 for bmv2 (v1model), role switch.
 * Generated from flexnet_lab/program/library.py (infrastructure()) by
 *   flexnet compile infra --target p4 -o p4src
 * p4src/infra.p4 is checked against the generator by tests/unit/test_p4_backend.py.
 * Do not edit: change the model and regenerate. */
#include <core.p4>
/* the extern signatures used here: counter, register<T>, meter indexed by bit<32> */
#define V1MODEL_VERSION 20180101
#include <v1model.p4>

header ethernet_t {
    bit<48> dst;
    bit<48> src;
    bit<16> ethertype;
}

header arp_t {
    bit<16> htype;
    bit<16> ptype;
    bit<8> hlen;
    bit<8> plen;
    bit<16> oper;
    bit<48> sha;
    bit<32> spa;
    bit<48> tha;
    bit<32> tpa;
}

header ipv4_t {
    bit<4> version;
    bit<4> ihl;
    bit<8> diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<3> flags;
    bit<13> frag_offset;
    bit<8> ttl;
    bit<8> protocol;
    bit<16> checksum;
    bit<32> src;
    bit<32> dst;
}

header tcp_t {
    bit<16> sport;
    bit<16> dport;
    bit<32> seq;
    bit<32> ack;
    bit<4> data_offset;
    bit<4> res;
    bit<8> flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgent;
}

header udp_t {
    bit<16> sport;
    bit<16> dport;
    bit<16> length;
    bit<16> checksum;
}

/* the lab's version tag (802.1ad S-tag, VID 0xFF0 | slot) as it follows the
 * source MAC; ethernet's ethertype is then 0x88a8 on the wire */
header flexnet_version_tag_t {
    bit<16> tci;
    bit<16> ethertype;
}

/* an oracle probe's first bytes (looked ahead at, never emitted): IPv4
 * without options, UDP to the probe port, payload magic; fields of at
 * most 64 bits (wider ones are bignums in bmv2) */
header flexnet_peek_plain_t {
    bit<48> dst;
    bit<48> src;
    bit<16> ethertype;
    bit<8> version_ihl;
    bit<64> ip_mid;
    bit<8> protocol;
    bit<64> ip_end;
    bit<16> ip_dst_low;
    bit<16> sport;
    bit<16> dport;
    bit<32> udp_end;
    bit<32> magic;
}

header flexnet_peek_tagged_t {
    bit<48> dst;
    bit<48> src;
    bit<32> tag;
    bit<16> ethertype;
    bit<8> version_ihl;
    bit<64> ip_mid;
    bit<8> protocol;
    bit<64> ip_end;
    bit<16> ip_dst_low;
    bit<16> sport;
    bit<16> dport;
    bit<32> udp_end;
    bit<32> magic;
}

/* an oracle probe's payload (compiler/probe.py): the trailer every switch writes
 * the version it ran into, slot[count], count + 1 (saturating) */
header flexnet_probe_trailer_t {
    bit<32> magic;
    bit<32> id;
    bit<8> count;
    bit<24> reserved;
    bit<32> slot0;
    bit<32> slot1;
    bit<32> slot2;
    bit<32> slot3;
    bit<32> slot4;
    bit<32> slot5;
    bit<32> slot6;
    bit<32> slot7;
}

/* a probe's 8 bytes between the model's last header and the trailer */
header flexnet_probe_skip_8_t {
    bit<64> b0;
}

/* a probe's 28 bytes between the model's last header and the trailer */
header flexnet_probe_skip_28_t {
    bit<64> b0;
    bit<64> b1;
    bit<64> b2;
    bit<32> b3;
}

struct headers {
    ethernet_t ethernet;
    arp_t arp;
    ipv4_t ipv4;
    tcp_t tcp;
    udp_t udp;
    flexnet_version_tag_t flexnet_version_tag;
    flexnet_peek_plain_t flexnet_peek_plain;
    flexnet_peek_tagged_t flexnet_peek_tagged;
    flexnet_probe_skip_8_t flexnet_probe_skip_8;
    flexnet_probe_skip_28_t flexnet_probe_skip_28;
    flexnet_probe_trailer_t flexnet_probe_trailer;
}

struct metadata {
    bit<32> l3_dst;
    bit<8> ip_proto;
    bit<16> l4_sport;
    bit<16> l4_dport;
    bit<1> flexnet_ipv4_set;   /* an ipv4 field was set: recompute the checksum */
    bit<2> flexnet_queued_slot;   /* 1 + the slot counted as queued */
    bit<16> flexnet_probe_bytes_left;   /* a probe: bytes to its payload the model's
                                       * parser has not extracted */
    bit<1> flexnet_probe_in_parser;
}

/* The model's std.* fields (its ports are 16 bits, bmv2's 9; std.pkt_len is
 * standard_metadata.packet_length). drop: the packet is dropped unless a
 * later forward() sends it. */
struct flexnet_std_t {
    bit<16> ingress_port;
    bit<16> egress_port;
    bit<1> drop;
}

parser ParserImpl(packet_in packet, out headers hdr, inout metadata meta,
                  inout standard_metadata_t standard_metadata) {
    state start {   /* shorter than 86 bytes: no oracle probe */
        transition select(standard_metadata.packet_length) {
            32w0x0 &&& 32w0xffffffc0: flexnet_model_start;
            32w0x40 &&& 32w0xfffffff0: flexnet_model_start;
            32w0x50 &&& 32w0xfffffffc: flexnet_model_start;
            32w0x54 &&& 32w0xfffffffe: flexnet_model_start;
            default: flexnet_probe_peeking;
        }
    }
    state flexnet_probe_peeking {   /* an oracle probe: IPv4 (no options) UDP to port 33999, payload "FXPR"... */
        hdr.flexnet_peek_plain = packet.lookahead<flexnet_peek_plain_t>();
        transition select(hdr.flexnet_peek_plain.ethertype, hdr.flexnet_peek_plain.version_ihl, hdr.flexnet_peek_plain.protocol, hdr.flexnet_peek_plain.dport, hdr.flexnet_peek_plain.magic) {
            (16w0x88a8, _, _, _, _): flexnet_probe_peeking_tagged;
            (16w0x0800, 8w0x45, 8w17, 16w33999, 32w0x46585052): flexnet_probe_recognised;
            default: flexnet_model_start;
        }
    }
    state flexnet_probe_peeking_tagged {   /* ... or the same after the lab's tag, 90 bytes at least */
        hdr.flexnet_peek_tagged = packet.lookahead<flexnet_peek_tagged_t>();
        transition select(standard_metadata.packet_length, hdr.flexnet_peek_tagged.tag, hdr.flexnet_peek_tagged.ethertype, hdr.flexnet_peek_tagged.version_ihl, hdr.flexnet_peek_tagged.protocol, hdr.flexnet_peek_tagged.dport, hdr.flexnet_peek_tagged.magic) {
            (32w0x0 &&& 32w0xffffffc0, _, _, _, _, _, _): flexnet_model_start;
            (32w0x40 &&& 32w0xfffffff0, _, _, _, _, _, _): flexnet_model_start;
            (32w0x50 &&& 32w0xfffffff8, _, _, _, _, _, _): flexnet_model_start;
            (32w0x58 &&& 32w0xfffffffe, _, _, _, _, _, _): flexnet_model_start;
            (_, 32w0x88a80ff0 &&& 32w0xffff0ffe, 16w0x0800, 8w0x45, 8w17, 16w33999, 32w0x46585052): flexnet_probe_recognised;
            default: flexnet_model_start;
        }
    }
    state flexnet_probe_recognised {
        meta.flexnet_probe_in_parser = 1w1;
        meta.flexnet_probe_bytes_left = 16w42;   /* the lab's tag is not counted: the model never sees it */
        transition flexnet_model_start;
    }
    state flexnet_tag_lookahead {   /* 802.1ad: the lab's tag has VID 0xFF0 | slot */
        transition select(packet.lookahead<bit<16>>()) {
            16w0x0ff0 &&& 16w0x0ffe: flexnet_tag_extracted;
            default: flexnet_after_ethernet;
        }
    }
    state flexnet_tag_extracted {
        packet.extract(hdr.flexnet_version_tag);
        hdr.ethernet.ethertype = hdr.flexnet_version_tag.ethertype;
        transition flexnet_after_ethernet;
    }
    state flexnet_model_start {
        packet.extract(hdr.ethernet);
        meta.flexnet_probe_bytes_left = meta.flexnet_probe_bytes_left - 16w14;
        transition select(hdr.ethernet.ethertype) {
            16w0x88a8: flexnet_tag_lookahead;
            default: flexnet_after_ethernet;
        }
    }
    state flexnet_after_ethernet {
        transition select(hdr.ethernet.ethertype) {
            16w0x0800: ipv4;
            16w0x0806: arp;
            default: flexnet_probe_after_model;
        }
    }
    state ipv4 {
        packet.extract(hdr.ipv4);
        meta.flexnet_probe_bytes_left = meta.flexnet_probe_bytes_left - 16w20;
        meta.l3_dst = hdr.ipv4.dst;
        meta.ip_proto = hdr.ipv4.protocol;
        transition select(hdr.ipv4.ihl, hdr.ipv4.protocol) {
            (4w5, 8w6): tcp;
            (4w5, 8w17): udp;
            default: flexnet_probe_after_model;
        }
    }
    state arp {
        packet.extract(hdr.arp);
        meta.flexnet_probe_bytes_left = meta.flexnet_probe_bytes_left - 16w28;
        meta.l3_dst = hdr.arp.tpa;
        transition flexnet_probe_after_model;
    }
    state tcp {
        packet.extract(hdr.tcp);
        meta.flexnet_probe_bytes_left = meta.flexnet_probe_bytes_left - 16w20;
        meta.l4_sport = hdr.tcp.sport;
        meta.l4_dport = hdr.tcp.dport;
        transition flexnet_probe_after_model;
    }
    state udp {
        packet.extract(hdr.udp);
        meta.flexnet_probe_bytes_left = meta.flexnet_probe_bytes_left - 16w8;
        meta.l4_sport = hdr.udp.sport;
        meta.l4_dport = hdr.udp.dport;
        transition flexnet_probe_after_model;
    }
    state flexnet_probe_after_model {   /* the model's parser accepted */
        transition select(meta.flexnet_probe_in_parser, meta.flexnet_probe_bytes_left) {
            (1w1, 16w0): flexnet_probe_trailer;
            (1w1, 16w8): flexnet_probe_skip_8_bytes;
            (1w1, 16w28): flexnet_probe_skip_28_bytes;
            default: accept;
        }
    }
    state flexnet_probe_skip_8_bytes {
        packet.extract(hdr.flexnet_probe_skip_8);
        transition flexnet_probe_trailer;
    }
    state flexnet_probe_skip_28_bytes {
        packet.extract(hdr.flexnet_probe_skip_28);
        transition flexnet_probe_trailer;
    }
    state flexnet_probe_trailer {
        packet.extract(hdr.flexnet_probe_trailer);
        transition accept;
    }
}

/* flexnet_version_queued: packets per version slot in the egress queues */
register<bit<32>>(2) flexnet_version_queued;

control ingress(inout headers hdr, inout metadata meta,
                inout standard_metadata_t standard_metadata) {
    flexnet_std_t std;

    /* counter port_rx: (packets, bytes) per index, as a register pair */
    register<bit<64>>(32) port_rx_packets;
    register<bit<64>>(32) port_rx_bytes;
    /* counter port_tx: (packets, bytes) per index, as a register pair */
    register<bit<64>>(32) port_tx_packets;
    register<bit<64>>(32) port_tx_bytes;

    action forward(bit<16> port) {
        if (std.drop == 1w0) {
            standard_metadata.egress_spec = (bit<9>)port;
            std.egress_port = port;
        }
    }

    action drop() {
        mark_to_drop(standard_metadata);
        std.egress_port = 16w0;
        std.drop = 1w1;
    }

    table l3_fwd {
        key = {
            meta.l3_dst: lpm @name("meta.l3_dst");
        }
        actions = { forward; drop; }
        default_action = drop();
        size = 1024;
    }

    /* per-packet consistent changes (plan/two_phase.py), written by the target:
     * flexnet_control_words: [0] the slot untagged packets run (the stamp), [1] tagging
     *   on, [2] the slot of the new version (a pipeline holding two), [3] the
     *   slot of an untagged packet from a trusted port while tagging is on (the
     *   old one: its sender ran it before it tagged), [4] links counted;
     * flexnet_version_number: [0] this load's version number ([1] the new one's);
     * flexnet_port_trusted / flexnet_port_push_tag: per port, the tag is trusted on arrival /
     *   pushed on departure (the neighbour there is a switch that knows it);
     * flexnet_version_count: packets per slot while tagging is on (the drain);
     * flexnet_port_push_tag: 2 = also mark the tag (DEI) and count it in
     *   flexnet_link_tag_sent
     *   while links are counted (the neighbour is a bmv2 switch, which counts
     *   what arrives marked in flexnet_link_tag_received: sent - received is in flight);
     * flexnet_version_queued: of those, how many wait in the egress queues (+1 here,
     *   -1 in egress: the drain waits for them too). */
    register<bit<32>>(5) flexnet_control_words;
    register<bit<32>>(2) flexnet_version_number;
    register<bit<1>>(512) flexnet_port_trusted;
    register<bit<2>>(512) flexnet_port_push_tag;
    register<bit<64>>(2) flexnet_link_tag_sent;
    register<bit<64>>(2) flexnet_link_tag_received;
    register<bit<64>>(2) flexnet_version_count;
    bit<1> flexnet_version_slot;      /* the slot this packet runs */
    bit<1> flexnet_is_new_version;    /* it runs the new version (two held) */
    bit<32> flexnet_tagging_on;

    apply {
        bit<64> flexnet_val_tmp1;
        bit<32> flexnet_idx_tmp2;
        bit<64> flexnet_val_tmp3;
        bit<32> flexnet_idx_tmp4;
        bit<32> flexnet_reg_word;
        bit<1> flexnet_reg_bit1;
        bit<1> flexnet_tag_was_seen = 1w0;
        bit<64> flexnet_count_tmp;
        bit<2> flexnet_tag_port_kind;
        flexnet_control_words.read(flexnet_reg_word, 32w0);
        flexnet_version_slot = (bit<1>)flexnet_reg_word;
        flexnet_control_words.read(flexnet_tagging_on, 32w1);
        flexnet_port_trusted.read(flexnet_reg_bit1, (bit<32>)standard_metadata.ingress_port);
        if (hdr.flexnet_version_tag.isValid()) {
            flexnet_tag_was_seen = 1w1;
            if ((hdr.flexnet_version_tag.tci & 16w0x1000) != 16w0) {   /* marked */
                flexnet_link_tag_received.read(flexnet_count_tmp, (bit<32>)hdr.flexnet_version_tag.tci[0:0]);
                flexnet_link_tag_received.write((bit<32>)hdr.flexnet_version_tag.tci[0:0], flexnet_count_tmp + 64w1);
            }
            if (flexnet_reg_bit1 == 1w1) {
                flexnet_version_slot = hdr.flexnet_version_tag.tci[0:0];
            }
            hdr.flexnet_version_tag.setInvalid();   /* popped: ethernet has the inner ethertype */
        } else if (flexnet_reg_bit1 == 1w1 && flexnet_tagging_on != 32w0) {
            /* sent untagged by a neighbour that stamps: before its tagging was on */
            flexnet_control_words.read(flexnet_reg_word, 32w3);
            flexnet_version_slot = (bit<1>)flexnet_reg_word;
        }
        if (flexnet_tagging_on != 32w0) {
            flexnet_version_count.read(flexnet_count_tmp, (bit<32>)flexnet_version_slot);
            flexnet_version_count.write((bit<32>)flexnet_version_slot, flexnet_count_tmp + 64w1);
        }
        flexnet_is_new_version = 1w0;
        /* an oracle probe (its trailer parsed): the version this packet runs into slot[count] */
        if (hdr.flexnet_probe_trailer.isValid()) {
            flexnet_version_number.read(flexnet_reg_word, (bit<32>)flexnet_is_new_version);
            if (hdr.flexnet_probe_trailer.count == 8w0) {
                hdr.flexnet_probe_trailer.slot0 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w1) {
                hdr.flexnet_probe_trailer.slot1 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w2) {
                hdr.flexnet_probe_trailer.slot2 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w3) {
                hdr.flexnet_probe_trailer.slot3 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w4) {
                hdr.flexnet_probe_trailer.slot4 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w5) {
                hdr.flexnet_probe_trailer.slot5 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w6) {
                hdr.flexnet_probe_trailer.slot6 = flexnet_reg_word;
            } else if (hdr.flexnet_probe_trailer.count == 8w7) {
                hdr.flexnet_probe_trailer.slot7 = flexnet_reg_word;
            }
            if (hdr.flexnet_probe_trailer.count != 8w255) {   /* saturates: above 8, the trailer overflowed */
                hdr.flexnet_probe_trailer.count = hdr.flexnet_probe_trailer.count + 8w1;
            }
        }
        hdr.flexnet_peek_plain.setInvalid();
        hdr.flexnet_peek_tagged.setInvalid();
        if (standard_metadata.parser_error != error.NoError) {
            mark_to_drop(standard_metadata);   /* reject = drop */
        } else {
            std.ingress_port = (bit<16>)standard_metadata.ingress_port;
            std.egress_port = 16w0;
            std.drop = 1w0;
            flexnet_idx_tmp2 = (bit<32>)std.ingress_port;
            port_rx_packets.read(flexnet_val_tmp1, flexnet_idx_tmp2);
            port_rx_packets.write(flexnet_idx_tmp2, flexnet_val_tmp1 + 64w1);
            port_rx_bytes.read(flexnet_val_tmp1, flexnet_idx_tmp2);
            port_rx_bytes.write(flexnet_idx_tmp2, flexnet_val_tmp1 + (bit<64>)standard_metadata.packet_length);
            l3_fwd.apply();
            flexnet_idx_tmp4 = (bit<32>)std.egress_port;
            port_tx_packets.read(flexnet_val_tmp3, flexnet_idx_tmp4);
            port_tx_packets.write(flexnet_idx_tmp4, flexnet_val_tmp3 + 64w1);
            port_tx_bytes.read(flexnet_val_tmp3, flexnet_idx_tmp4);
            port_tx_bytes.write(flexnet_idx_tmp4, flexnet_val_tmp3 + (bit<64>)standard_metadata.packet_length);
            /* verdict: a packet nothing forwarded (std.egress_port 0) is dropped;
             * v1model drops a packet whose egress_spec is the drop port (511) */
            if (std.drop == 1w1 || std.egress_port == 16w0) {
                mark_to_drop(standard_metadata);
            } else {
                standard_metadata.egress_spec = (bit<9>)std.egress_port;
            }
            if (flexnet_tagging_on != 32w0 && standard_metadata.egress_spec != 9w511) {
                flexnet_version_queued.read(flexnet_reg_word, (bit<32>)flexnet_version_slot);
                flexnet_version_queued.write((bit<32>)flexnet_version_slot, flexnet_reg_word + 32w1);
                meta.flexnet_queued_slot = (bit<2>)flexnet_version_slot + 2w1;
                flexnet_port_push_tag.read(flexnet_tag_port_kind, (bit<32>)standard_metadata.egress_spec);
                if (flexnet_tag_port_kind != 2w0) {
                    hdr.flexnet_version_tag.setValid();
                    hdr.flexnet_version_tag.tci = 16w0x0ff0 | (bit<16>)flexnet_version_slot;
                    hdr.flexnet_version_tag.ethertype = hdr.ethernet.ethertype;
                    hdr.ethernet.ethertype = 16w0x88a8;
                    flexnet_control_words.read(flexnet_reg_word, 32w4);
                    if (flexnet_tag_port_kind == 2w2 && flexnet_reg_word != 32w0) {
                        hdr.flexnet_version_tag.tci = hdr.flexnet_version_tag.tci | 16w0x1000;
                        flexnet_link_tag_sent.read(flexnet_count_tmp, (bit<32>)flexnet_version_slot);
                        flexnet_link_tag_sent.write((bit<32>)flexnet_version_slot, flexnet_count_tmp + 64w1);
                    }
                }
            }
        }
    }
}

control egress(inout headers hdr, inout metadata meta,
               inout standard_metadata_t standard_metadata) {
    apply {
        bit<32> flexnet_queued_count;
        bit<32> flexnet_queued_index;
        if (meta.flexnet_queued_slot != 2w0) {   /* out of the queue */
            flexnet_queued_index = (bit<32>)(meta.flexnet_queued_slot - 2w1);
            flexnet_version_queued.read(flexnet_queued_count, flexnet_queued_index);
            flexnet_version_queued.write(flexnet_queued_index, flexnet_queued_count - 32w1);
        }
    }
}

control verifyChecksum(inout headers hdr, inout metadata meta) {
    apply { }
}

control computeChecksum(inout headers hdr, inout metadata meta) {
    apply {
        update_checksum(hdr.ipv4.isValid() && meta.flexnet_ipv4_set == 1w1,
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.total_len,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.frag_offset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.src,
              hdr.ipv4.dst },
            hdr.ipv4.checksum, HashAlgorithm.csum16);
    }
}

control DeparserImpl(packet_out packet, in headers hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.flexnet_version_tag);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.arp);
        packet.emit(hdr.tcp);
        packet.emit(hdr.udp);
        packet.emit(hdr.flexnet_probe_skip_8);
        packet.emit(hdr.flexnet_probe_skip_28);
        packet.emit(hdr.flexnet_probe_trailer);
    }
}

V1Switch(ParserImpl(), verifyChecksum(), ingress(), egress(), computeChecksum(), DeparserImpl()) main;
