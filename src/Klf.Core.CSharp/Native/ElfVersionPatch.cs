using System.Buffers.Binary;
using System.Text;

namespace Klf.Native;

/// <summary>
/// Edits the symbol-version requirements (<c>.gnu.version_r</c>) of a 64-bit little-endian ELF
/// shared library. Used to mark a version node such as <c>GLIBCXX_3.4.32</c> weak, so the
/// dynamic loader accepts an older libstdc++ that lacks that node (see the README's
/// "TorchSharp on older Linux" section for why this is safe for LibTorchSharp).
/// </summary>
public static class ElfVersionPatch
{
    /// <summary>One required symbol version of a library.</summary>
    /// <param name="File">The library that must provide it (e.g. <c>libstdc++.so.6</c>).</param>
    /// <param name="Version">The version node name (e.g. <c>GLIBCXX_3.4.32</c>).</param>
    /// <param name="Weak">Whether the requirement is weak (the loader only warns when it is missing).</param>
    public sealed record RequiredVersion(string File, string Version, bool Weak);

    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>Lists the version nodes the library requires, with the file that provides each and whether it is weak.</summary>
    /// <param name="elf">The whole library file.</param>
    /// <returns>(file, version name, weak) triples in file order.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a 64-bit little-endian ELF with a version-needs section.</exception>
    public static IReadOnlyList<RequiredVersion> RequiredVersions(byte[] elf)
    {
        var result = new List<RequiredVersion>();
        Walk(elf, (file, name, flagsOffset) =>
        {
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(flagsOffset));
            result.Add(new RequiredVersion(file, name, (flags & VerFlgWeak) != 0));
        });
        return result;
    }

    /// <summary>
    /// Sets the weak flag on every required version node named <paramref name="version"/>.
    /// Returns how many entries were changed (0 when already weak or absent). Only the flag bytes
    /// change; the file's size and every other byte stay as they were.
    /// </summary>
    /// <param name="elf">The whole library file, edited in place.</param>
    /// <param name="version">The version node name, for example <c>GLIBCXX_3.4.32</c>.</param>
    public static int MarkWeak(byte[] elf, string version)
    {
        var changed = 0;
        Walk(elf, (_, name, flagsOffset) =>
        {
            if (name != version) return;
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(flagsOffset));
            if ((flags & VerFlgWeak) != 0) return;
            BinaryPrimitives.WriteUInt16LittleEndian(elf.AsSpan(flagsOffset), (ushort)(flags | VerFlgWeak));
            changed++;
        });
        return changed;
    }

    private static void Walk(byte[] elf, Action<string, string, int> visit)
    {
        var s = elf.AsSpan();
        if (s.Length < 64 || s[0] != 0x7f || s[1] != (byte)'E' || s[2] != (byte)'L' || s[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (s[4] != 2 || s[5] != 1)
            throw new InvalidDataException("only 64-bit little-endian ELF files are supported");

        var shoff = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(s[0x28..]));
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(s[0x3a..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(s[0x3c..]);

        for (var i = 0; i < shnum; i++)
        {
            var sh = s.Slice(shoff + i * shentsize, shentsize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != ShtGnuVerneed) continue;
            var offset = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(sh[0x18..]));
            var link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            var info = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x2c..]);
            var strSh = s.Slice(shoff + link * shentsize, shentsize);
            var strOff = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(strSh[0x18..]));

            var vn = offset;
            for (var n = 0; n < info; n++)
            {
                int cnt = BinaryPrimitives.ReadUInt16LittleEndian(s[(vn + 2)..]);
                var file = ReadString(s, strOff + (int)BinaryPrimitives.ReadUInt32LittleEndian(s[(vn + 4)..]));
                var aux = vn + (int)BinaryPrimitives.ReadUInt32LittleEndian(s[(vn + 8)..]);
                for (var a = 0; a < cnt; a++)
                {
                    var name = ReadString(s, strOff + (int)BinaryPrimitives.ReadUInt32LittleEndian(s[(aux + 8)..]));
                    visit(file, name, aux + 4);
                    aux += (int)BinaryPrimitives.ReadUInt32LittleEndian(s[(aux + 12)..]);
                }
                var next = (int)BinaryPrimitives.ReadUInt32LittleEndian(s[(vn + 12)..]);
                if (next == 0) break;
                vn += next;
            }
            return;
        }
        throw new InvalidDataException("no .gnu.version_r section");
    }

    private static string ReadString(ReadOnlySpan<byte> s, int at)
    {
        var end = s[at..].IndexOf((byte)0);
        return Encoding.ASCII.GetString(s.Slice(at, end));
    }
}
