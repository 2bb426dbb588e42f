using XenPvUsb.Usb;
using XenPvUsb.Usbif;
using XenPvUsb.Xen;
using static XenPvUsb.Usbif.Usbif;

namespace XenPvUsb.Fuzz;

public sealed partial class HostileGuest
{
    private const uint PortAndDeviceBits = USBIF_PIPE_PORT_MASK | (USBIF_PIPE_DEV_MASK << USBIF_PIPE_DEV_SHIFT);

    /// <summary>Turns a spec into the bytes of a request, resolving ids, addresses and grant refs against the run.</summary>
    private unsafe usbif_urb_request Materialize(RequestSpec s, out InFlight entry)
    {
        InFlight? target = null;
        lock (_inFlight)
        {
            if ((s.IdMode == IdMode.InFlight || s.Unlink is UnlinkMode.InFlight or UnlinkMode.InFlightOwnPipe) && _inFlight.Count > 0)
            {
                target = _inFlight[_random.Next(_inFlight.Count)];
            }
        }
        ushort id = s.IdMode switch
        {
            IdMode.Literal => s.Id,
            IdMode.InFlight when target is { } t => t.Id,
            _ => FreshId(),
        };
        int port = s.Port switch
        {
            PortSel.Stick => StickPort,
            PortSel.Keyboard => KeyboardPort,
            PortSel.Spare => SparePort,
            PortSel.Empty => 4 + (s.PortValue % (NumPorts - 3)),
            PortSel.Zero => 0,
            _ => s.PortValue & 31,
        };
        int addr = s.Addr switch
        {
            AddrSel.Model => port <= NumPorts ? _address[port] : 0,
            AddrSel.Zero => 0,
            _ => s.AddrValue & 0x7f,
        };
        uint pipe = (s.PipeRest & ~PortAndDeviceBits) | (uint)port | ((uint)addr << USBIF_PIPE_DEV_SHIFT);
        ulong union = s.Union;
        switch (s.Unlink)
        {
            case UnlinkMode.InFlight when target is { } t:
                pipe = t.Pipe | USBIF_PIPE_UNLINK;
                union = t.Id;
                break;
            case UnlinkMode.InFlightOwnPipe when target is { } t:
                union = t.Id;
                break;
        }

        var req = new usbif_urb_request { id = id, pipe = pipe, transfer_flags = s.TransferFlags, u_ctrl = union };
        int n = Math.Min(s.Segments.Length, USBIF_MAX_SEGMENTS_PER_REQUEST);
        int sum = 0;
        for (int i = 0; i < n; i++)
        {
            SegSpec seg = s.Segments[i];
            int page = seg.Page % RequestGenerators.PoolPages;
            uint gref = seg.Kind switch
            {
                GrantKind.Writable => _writableRefs[page].Value,
                GrantKind.ReadOnly => _readOnlyRefs[page].Value,
                GrantKind.Foreign => _foreignRefs[page].Value,
                GrantKind.Revoked => _revokedRefs[page].Value,
                GrantKind.Reserved => (uint)page,
                GrantKind.UrbRingPage => _frontend.RingRefs.Urb.Value,
                _ => seg.Literal,
            };
            req.seg[i] = new usbif_request_segment { gref = gref, offset = seg.Offset, length = seg.Length };
            if (i < s.DataSegments)
            {
                sum += seg.Length;
            }
        }
        if (s.Origin.StartsWith("bulk-out", StringComparison.Ordinal) && n > 0 && s.Segments[0].Kind is GrantKind.ReadOnly or GrantKind.Writable)
        {
            // A command block for the stick in the first data page (the union carried which one).
            int which = (int)(union & 0xff);
            SegSpec first = s.Segments[0];
            nint page = first.Kind == GrantKind.ReadOnly ? _readOnlyPages[first.Page % RequestGenerators.PoolPages] : _writablePages[first.Page % RequestGenerators.PoolPages];
            if (which < RequestGenerators.Cbws.Length && first.Offset + 31 <= RequestGenerators.PageSize)
            {
                RequestGenerators.Cbws[which].CopyTo(new Span<byte>((byte*)page + first.Offset, 31));
            }
            if (s.Origin == "bulk-out")
            {
                req.u_ctrl = 0;
            }
        }
        if (s.Origin == "isochronous" && s.IsoLayout != IsoLayout.Stale)
        {
            WriteIsoDescriptors(s, (int)((union >> 32) & 0xffff), sum);
        }
        req.nr_buffer_segs = s.SegCount ?? (ushort)s.DataSegments;
        req.buffer_length = s.LengthMode switch
        {
            LengthMode.Consistent => (ushort)sum,
            LengthMode.Delta => (ushort)(sum + s.LengthValue),
            _ => (ushort)s.LengthValue,
        };

        entry = Describe(req, s.Origin, s.SelfHarm);
        return req;
    }

    /// <summary>
    /// Writes packet descriptors (struct usb_iso_packet_descriptor, 16 bytes each) into the request's descriptor
    /// segments where they are the guest's writable pages, across page boundaries as a real array would lie.
    /// </summary>
    private unsafe void WriteIsoDescriptors(RequestSpec s, int packets, int dataLength)
    {
        Span<byte> d = stackalloc byte[16];
        int segment = s.DataSegments;
        int into = 0;
        int next = 0;
        for (int i = 0; i < packets && segment < Math.Min(s.Segments.Length, USBIF_MAX_SEGMENTS_PER_REQUEST); i++)
        {
            (uint offset, uint length) = s.IsoLayout switch
            {
                IsoLayout.BackToBack => ((uint)next, (uint)s.IsoPacketLength),
                IsoLayout.Overlapping => (0u, (uint)dataLength),
                _ => ((uint)_random.Next() << 1 ^ (uint)_random.Next(), (uint)_random.Next(0, 2) == 0 ? (uint)_random.Next(0, 400) : (uint)_random.Next()),
            };
            next += s.IsoPacketLength;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(d, offset);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(d[4..], length);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(d[8..], 0);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(d[12..], -18);
            for (int b = 0; b < 16 && segment < Math.Min(s.Segments.Length, USBIF_MAX_SEGMENTS_PER_REQUEST);)
            {
                SegSpec seg = s.Segments[segment];
                int room = Math.Min(seg.Length, RequestGenerators.PageSize - seg.Offset) - into;
                if (seg.Kind != GrantKind.Writable || room <= 0)
                {
                    segment++;
                    into = 0;
                    if (seg.Kind != GrantKind.Writable)
                    {
                        return; // not our page to write: what it holds is what the backend reads
                    }
                    continue;
                }
                int take = Math.Min(room, 16 - b);
                d.Slice(b, take).CopyTo(new Span<byte>((byte*)_writablePages[seg.Page % RequestGenerators.PoolPages] + seg.Offset + into, take));
                b += take;
                into += take;
            }
        }
    }

    /// <summary>What the model records of a request: the validator's verdict and how long its data stage is.</summary>
    private static InFlight Describe(in usbif_urb_request req, string origin, bool selfHarm = false)
    {
        UrbRequestVerdict verdict = UrbRequestValidator.Validate(in req, NumPorts);
        int maxLength = 0;
        if (verdict.IsValid && !verdict.IsUnlink)
        {
            maxLength = verdict.DataLength;
            if (verdict.Pipe.Type == UsbTransferType.Control)
            {
                maxLength = Math.Min(maxLength, (int)(req.u_ctrl >> 48));
            }
        }
        return new InFlight(req.id, req.pipe, maxLength, verdict.Reason, selfHarm, verdict.IsUnlink, origin, selfHarm, req.u_ctrl);
    }

    /// <summary>A control request of the guest's own (not fuzzed), sent raw and waited for. Returns its status, or null if unanswered.</summary>
    private async Task<int?> ControlAsync(int port, int address, ulong setup, int dataLength = 0)
    {
        var req = new usbif_urb_request
        {
            id = FreshId(),
            pipe = UsbifPipe.Create(port, address, 0, (setup & 0x80) != 0, UsbTransferType.Control).Value,
            u_ctrl = setup,
        };
        if (dataLength > 0)
        {
            req.nr_buffer_segs = 1;
            req.buffer_length = (ushort)dataLength;
            req.seg[0] = new usbif_request_segment { gref = _writableRefs[7].Value, offset = 0, length = (ushort)dataLength };
        }
        int? status = null;
        ushort id = req.id;
        if (!Send(req, Describe(req, "resync"), push: true))
        {
            return null;
        }
        _frontend.Kick();
        // Watch for this id's answer among the others.
        bool answered = await WaitAnsweredAsync(s_answerLimit, () => _inFlightCount[id] == 0).ConfigureAwait(false);
        if (answered && _inFlightCount[id] == 0)
        {
            status = 0;
        }
        return status;
    }

    /// <summary>Puts the devices back in a known state: a fresh address, configuration 1, halts cleared, the stick's transport reset.</summary>
    private async Task ResyncAsync()
    {
        _stats.Count("ops:resync");
        await UnlinkAllAsync().ConfigureAwait(false);
        foreach (int port in _spareAttached ? [StickPort, KeyboardPort, SparePort] : new[] { StickPort, KeyboardPort })
        {
            if (!_frontend.IsConnected)
            {
                return;
            }
            int address = NextAddress();
            ulong setAddress = RequestGenerators.Setup(0x00, 5, (ushort)address, 0, 0);
            // The backend takes SET_ADDRESS at address 0 or at the device's current one.
            if (await ControlAsync(port, 0, setAddress).ConfigureAwait(false) is null)
            {
                return;
            }
            _address[port] = address;
            await ControlAsync(port, address, RequestGenerators.Setup(0x00, 9, 1, 0, 0)).ConfigureAwait(false);
            await ControlAsync(port, address, RequestGenerators.Setup(0x02, 1, 0, 0x81, 0)).ConfigureAwait(false);
            if (port == SparePort)
            {
                // The audio device's speaker and microphone streaming (alternate setting 1 of interfaces 1 and 2).
                await ControlAsync(port, address, RequestGenerators.Setup(0x01, 11, 1, 1, 0)).ConfigureAwait(false);
                await ControlAsync(port, address, RequestGenerators.Setup(0x01, 11, 1, 2, 0)).ConfigureAwait(false);
            }
            if (port == StickPort)
            {
                await ControlAsync(port, address, RequestGenerators.Setup(0x02, 1, 0, 0x02, 0)).ConfigureAwait(false);
                await ControlAsync(port, address, RequestGenerators.Setup(0x21, 0xff, 0, 0, 0)).ConfigureAwait(false);
            }
        }
    }

    private int NextAddress()
    {
        _nextAddress = _nextAddress % 120 + 1;
        return _nextAddress + 1;
    }
}
